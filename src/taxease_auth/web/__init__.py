"""Server-rendered pages for people (DESIGN.md §12): sign in, sign up, the code, the password
reset and the account page. They call the same service layer as the JSON API under ``api/``."""
