"""The training pages (administrators only), one module per page family. House style: validate
with a form, call one service, render or redirect. No torch here: the services that train or
evaluate run on the `training` queue."""
