"""The web app for health workers and managers, and the app API it uses (``/api``)."""
