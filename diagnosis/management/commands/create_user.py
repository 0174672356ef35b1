from __future__ import annotations

import getpass
import os

from django.contrib.auth.models import Group, User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from cxrweb.roles import ADMIN_GROUP, RADIOLOGIST_GROUP


class Command(BaseCommand):
    help = (
        "Create a user with a role. Radiologists upload, view and read studies; admins also "
        "manage users, model versions and training (and get the Django admin). The password is "
        "asked for, or read from CXR_NEW_USER_PASSWORD."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", choices=["radiologist", "admin"], required=True)
        parser.add_argument("--first-name", default="")
        parser.add_argument("--last-name", default="")
        parser.add_argument("--email", default="")

    def handle(self, *args, username, role, first_name, last_name, email, **options):
        if User.objects.filter(username=username).exists():
            raise CommandError(f"A user named {username!r} already exists.")
        password = os.environ.get("CXR_NEW_USER_PASSWORD") or getpass.getpass(
            f"Password for {username}: "
        )
        user = User(
            username=username,
            first_name=first_name,
            last_name=last_name,
            email=email,
            is_staff=(role == "admin"),
        )
        try:
            validate_password(password, user)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        user.set_password(password)
        user.save()
        group = Group.objects.get(name=ADMIN_GROUP if role == "admin" else RADIOLOGIST_GROUP)
        user.groups.add(group)
        self.stdout.write(self.style.SUCCESS(f"Created {role} {username!r}."))
