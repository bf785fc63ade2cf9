"""Platform clients shared by the services that talk to a platform's API."""
