"""A tiny Flask app that the end-to-end tests deploy with bakery.

It exercises what a real app needs from the server: a requirements file,
a setup command that creates its table (``flask --app fixture init-db``),
a static file served by the web server, configuration from ``.env``, and a
page that shows its version and a row read from the database.
"""

import os
import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlsplit

from dotenv import load_dotenv
from flask import Flask

HERE = Path(__file__).resolve().parent

# gunicorn does not read .env; the app does it itself.
load_dotenv(HERE / ".env")

app = Flask(__name__)

GREETING = "hello from the database"


def connect():
    """A DB-API connection from DATABASE_URL (mysql+pymysql:// or sqlite:///)."""
    url = os.environ.get("DATABASE_URL", f"sqlite:///{HERE / 'fixture.db'}")
    parts = urlsplit(url)
    if parts.scheme.startswith("sqlite"):
        # sqlite:////abs/path -> /abs/path ; sqlite:///rel -> rel
        return sqlite3.connect(url.split(":///", 1)[1]), "?"
    if parts.scheme.startswith("mysql"):
        import pymysql

        return pymysql.connect(
            host=parts.hostname or "localhost",
            port=parts.port or 3306,
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            database=parts.path.lstrip("/"),
        ), "%s"
    raise RuntimeError(f"unsupported DATABASE_URL scheme: {parts.scheme}")


@app.cli.command("init-db")
def init_db():
    """Create the greeting table and its row; safe to run again."""
    connection, mark = connect()
    try:
        cursor = connection.cursor()
        cursor.execute("CREATE TABLE IF NOT EXISTS greeting (id INTEGER PRIMARY KEY, text VARCHAR(100))")
        cursor.execute("SELECT COUNT(*) FROM greeting WHERE id = 1")
        if cursor.fetchone()[0] == 0:
            cursor.execute(f"INSERT INTO greeting (id, text) VALUES (1, {mark})", (GREETING,))
        connection.commit()
    finally:
        connection.close()
    print("database ready")


@app.route("/")
def index():
    version = (HERE / "VERSION").read_text().strip()
    connection, _ = connect()
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT text FROM greeting WHERE id = 1")
        row = cursor.fetchone()
    finally:
        connection.close()
    return (
        "<!doctype html><title>fixture</title>"
        '<link rel="stylesheet" href="/static/style.css">'
        f"<p>version: {version}</p><p>row: {row[0] if row else 'none'}</p>\n"
    )
