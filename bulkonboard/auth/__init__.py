"""Sign-in: settings with secrets by reference, MSAL tokens."""
