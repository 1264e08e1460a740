"""Databases of their own on the local PostgreSQL server, for tests that need one (dropped after)."""

import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager

import psycopg2


def connect(server: dict, database: str):
    return psycopg2.connect(host=server["host"], port=server["port"], user=server["user"], dbname=database)


def _admin(server: dict):
    connection = connect(server, "postgres")
    connection.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction (nor `with connection`)
    return connection


@contextmanager
def temporary_database(server: dict, purpose: str) -> Iterator[str]:
    """A new database named after ``purpose``, dropped (even while connected to) when the block ends."""
    name = f"keel_{purpose}_{uuid.uuid4().hex[:12]}"
    with closing(_admin(server)) as admin, admin.cursor() as cursor:
        cursor.execute(f'create database "{name}"')
    try:
        yield name
    finally:
        with closing(_admin(server)) as admin, admin.cursor() as cursor:
            cursor.execute(f'drop database if exists "{name}" with (force)')


def count(server: dict, database: str, sql: str) -> int:
    with closing(connect(server, database)) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]
