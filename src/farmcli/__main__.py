from farmcli.cli import app

app(prog_name="farm")
