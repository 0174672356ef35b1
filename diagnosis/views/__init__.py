"""The browser views, one module per page family: validate with a form, call one service, render
or redirect. No torch here.

Read-only views take GET and HEAD (require_safe). A HEAD runs the view as its GET does and only
loses the body, so it is audited as the GET is: it still tells that a patient's file exists.
"""
