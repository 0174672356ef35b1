from __future__ import annotations

from cxrweb.roles import is_model_admin


def roles(request) -> dict:
    user = getattr(request, "user", None)
    return {"perms_admin": bool(user is not None and is_model_admin(user))}
