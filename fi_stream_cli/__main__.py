from fi_stream_cli.main import app

app()
