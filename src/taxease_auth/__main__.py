from taxease_auth.cli import app

app(prog_name="taxease-auth")
