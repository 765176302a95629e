"""The HTTP clients for Partner Center and Microsoft Graph: requests, answers, the error tree."""
