"""sql_query against real SQLite files and this machine's PostgreSQL: reads work, every write is refused."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agentflow.runtime import AgentFlow
from agentflow.tools.data import check_read_only
from agentflow.tools.registry import ToolContext, ToolError, builtin_registry
from agentflow.trust.egress import EgressDenied, EgressPolicy
from tests import postgres
from tests.integration.helpers import run_source, workflow

pytestmark = pytest.mark.store_agnostic

TOOL = builtin_registry(operator=False).get("sql_query")
LOOPBACK = EgressPolicy(hosts=frozenset({"127.0.0.1"}), allow_internal=("127.0.0.1",))


def context(secrets: dict[str, str], egress: EgressPolicy | None = LOOPBACK) -> ToolContext:
    def secret(name: str) -> str:
        if name not in secrets:
            raise ToolError(f"secret {name} is not granted to this workflow; add it to spec.permissions.secrets")
        return secrets[name]

    return ToolContext(run_id="run-1", node_id="report", egress=egress, secret=secret)


async def query(secrets: dict[str, str], sql: str, egress: EgressPolicy | None = LOOPBACK, **arguments: Any) -> Any:
    return await TOOL.call({"database": "ANALYTICS_DSN", "query": sql, **arguments}, context(secrets, egress))


# --- SQLite --------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_dsn(tmp_path: Path) -> str:
    path = tmp_path / "shop data" / "sales.db"
    path.parent.mkdir()
    with sqlite3.connect(path) as connection:
        connection.executescript(
            """
            CREATE TABLE sales (id INTEGER PRIMARY KEY, region TEXT, amount REAL, receipt BLOB);
            INSERT INTO sales (region, amount, receipt) VALUES
              ('north', 120.5, x'00ff'), ('south', 80, NULL), ('north', 30, NULL), ('east', 95, NULL);
            """
        )
    connection.close()
    return f"sqlite:///{path}"


def sales_rows(dsn: str) -> list[Any]:
    path = dsn.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT id, region, amount FROM sales ORDER BY id").fetchall()


def test_sql_query_declares_its_secret_argument() -> None:
    assert TOOL.secret_arguments == ("database",)
    assert TOOL.network is True and TOOL.pure is False
    assert "the secret named by `database`" in TOOL.capability()


async def test_sqlite_select_with_bound_parameters(sqlite_dsn: str) -> None:
    secrets = {"ANALYTICS_DSN": sqlite_dsn}
    result = await query(
        secrets,
        "SELECT region, sum(amount) AS total FROM sales WHERE amount > ? GROUP BY region ORDER BY region;",
        params=[50],
    )
    assert result == {
        "columns": ["region", "total"],
        "rows": [["east", 95.0], ["north", 120.5], ["south", 80.0]],
        "truncated": False,
    }
    named = await query(secrets, "SELECT count(*) AS n FROM sales WHERE region = :region", params={"region": "north"})
    assert named["rows"] == [[2]]
    injected = await query(secrets, "SELECT count(*) FROM sales WHERE region = ?", params=["x' OR '1'='1"])
    assert injected["rows"] == [[0]]  # bound as a value, never spliced into the SQL


async def test_sqlite_rows_are_capped_and_json_safe(sqlite_dsn: str) -> None:
    secrets = {"ANALYTICS_DSN": sqlite_dsn}
    result = await query(secrets, "SELECT id, receipt FROM sales ORDER BY id", max_rows=1)
    assert result == {"columns": ["id", "receipt"], "rows": [[1, {"base64": "AP8="}]], "truncated": True}
    with pytest.raises(ToolError, match="max_rows: Input should be less than or equal to 1000"):
        await query(secrets, "SELECT 1", max_rows=5000)


async def test_sqlite_introspection(sqlite_dsn: str) -> None:
    secrets = {"ANALYTICS_DSN": sqlite_dsn}
    info = await query(secrets, "PRAGMA table_info(sales)")
    assert [row[1] for row in info["rows"]] == ["id", "region", "amount", "receipt"]
    tables = await query(secrets, "WITH t AS (SELECT name FROM sqlite_master WHERE type = 'table') SELECT * FROM t")
    assert tables["rows"] == [["sales"]]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("INSERT INTO sales (region) VALUES ('x')", "sql_query only reads: a INSERT statement is refused"),
        ("  -- a comment\n DELETE FROM sales", "a DELETE statement is refused"),
        ("/* hi */ UPDATE sales SET amount = 0", "a UPDATE statement is refused"),
        ("ATTACH DATABASE '/tmp/x.db' AS x", "a ATTACH statement is refused"),
        ("DROP TABLE sales", "a DROP statement is refused"),
        ("SELECT 1; DROP TABLE sales", "sql_query runs exactly one statement"),
        ("SELECT 1;; ", "sql_query runs exactly one statement"),
        ("PRAGMA query_only = OFF", "PRAGMA query_only is refused"),
        ("PRAGMA journal_mode=DELETE", "PRAGMA journal_mode is refused"),
        ("PRAGMA main.user_version(7)", "PRAGMA user_version is refused"),
        ("PRAGMA table_info = x", "never with '='"),
        ("   ", "query is empty"),
        ("-- only a comment", "query is empty"),
    ],
)
async def test_sqlite_writes_are_refused_at_the_first_check(sqlite_dsn: str, sql: str, message: str) -> None:
    with pytest.raises(ToolError, match=message.replace("(", r"\(")):
        await query({"ANALYTICS_DSN": sqlite_dsn}, sql)
    assert len(sales_rows(sqlite_dsn)) == 4


async def test_a_semicolon_inside_a_string_is_not_a_second_statement(sqlite_dsn: str) -> None:
    result = await query({"ANALYTICS_DSN": sqlite_dsn}, "SELECT 'a;b' AS text, \"region\" FROM sales LIMIT 1 -- ; x")
    assert result["rows"] == [["a;b", "north"]]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("WITH x AS (SELECT 1) INSERT INTO sales (region) VALUES ('x')", "not authorized.*sql_query is read-only"),
        ("WITH x AS (SELECT 1) UPDATE sales SET amount = 0", "not authorized.*sql_query is read-only"),
        ("WITH x AS (SELECT 1) DELETE FROM sales", "not authorized.*sql_query is read-only"),
        ("WITH gone AS (DELETE FROM sales RETURNING id) SELECT * FROM gone", 'near "DELETE": syntax error'),
    ],
)
async def test_sqlite_writes_through_with_fail_at_the_database(sqlite_dsn: str, sql: str, message: str) -> None:
    assert check_read_only(sql, dialect="sqlite")  # the keyword check lets WITH through...
    with pytest.raises(ToolError, match=message):
        await query({"ANALYTICS_DSN": sqlite_dsn}, sql)  # ...the read-only connection does not
    assert len(sales_rows(sqlite_dsn)) == 4


async def test_sqlite_read_only_connection_refuses_what_slips_past_the_check(
    sqlite_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the keyword check switched off, the connection alone still refuses writes, ATTACH and PRAGMA changes."""
    monkeypatch.setattr("agentflow.tools.data.check_read_only", lambda query, dialect: query)
    secrets = {"ANALYTICS_DSN": sqlite_dsn}
    for sql in (
        "INSERT INTO sales (region) VALUES ('x')",
        "ATTACH DATABASE ':memory:' AS scratch",
        "PRAGMA query_only = OFF",
        "CREATE TEMP TABLE t (x)",
        "BEGIN",
    ):
        with pytest.raises(ToolError, match=r"refused the query \(not authorized\): sql_query is read-only"):
            await query(secrets, sql)
    with pytest.raises(ToolError, match="the query failed: You can only execute one statement at a time"):
        await query(secrets, "SELECT 1; DELETE FROM sales")
    assert len(sales_rows(sqlite_dsn)) == 4


async def test_sqlite_missing_file_does_not_create_it_nor_echo_the_dsn(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "secret-name-of-file.db"
    with pytest.raises(ToolError) as caught:
        await query({"ANALYTICS_DSN": f"sqlite:///{missing}"}, "SELECT 1")
    assert str(caught.value) == (
        "cannot open the SQLite database named by secret ANALYTICS_DSN: the file does not exist or is not readable"
    )
    assert "secret-name-of-file" not in str(caught.value)
    assert not missing.exists()


async def test_sqlite_errors_are_clear(sqlite_dsn: str) -> None:
    with pytest.raises(ToolError, match="the query failed: no such table: nope"):
        await query({"ANALYTICS_DSN": sqlite_dsn}, "SELECT * FROM nope")


async def test_sqlite_a_runaway_query_is_stopped(sqlite_dsn: str) -> None:
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
    with pytest.raises(ToolError, match=r"the query ran longer than 0.2 s and was stopped"):
        await query({"ANALYTICS_DSN": sqlite_dsn}, endless, timeout=0.2)


# --- secrets -------------------------------------------------------------------------------------


async def test_an_ungranted_secret_is_refused() -> None:
    with pytest.raises(ToolError, match="secret ANALYTICS_DSN is not granted to this workflow"):
        await query({}, "SELECT 1")


async def test_outside_a_run_no_secret_is_available() -> None:
    with pytest.raises(ToolError, match="only a workflow run can use a granted secret"):
        await TOOL.call({"database": "ANALYTICS_DSN", "query": "SELECT 1"})


async def test_the_argument_is_a_secret_name_not_a_dsn() -> None:
    with pytest.raises(ToolError, match="database: String should match pattern"):
        await TOOL.call({"database": "postgresql://u:p@db/x", "query": "SELECT 1"}, context({}))


async def test_an_unknown_dsn_is_refused_without_echoing_it() -> None:
    with pytest.raises(ToolError) as caught:
        await query({"ANALYTICS_DSN": "mysql://root:hunter2@db.example.com/shop"}, "SELECT 1")
    assert "does not hold a DSN sql_query knows" in str(caught.value)
    assert "hunter2" not in str(caught.value) and "mysql" not in str(caught.value)


# --- PostgreSQL ----------------------------------------------------------------------------------


@pytest.fixture
def postgres_dsn() -> Iterator[str]:
    try:
        url = postgres.create_database(migrated=False)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is not reachable ({exc}); start it with `make services`")
    try:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(
                "CREATE TABLE sales (id serial PRIMARY KEY, region text, amount numeric(8, 2), sold date);"
                "INSERT INTO sales (region, amount, sold) VALUES ('north', 120.50, '2026-01-03'),"
                "('south', 80, '2026-01-04'), ('north', 30, '2026-02-01');"
            )
        yield url
    finally:
        postgres.drop_database(url)


def pg_count(url: str) -> int:
    with psycopg.connect(url) as connection:
        row = connection.execute("SELECT count(*) FROM sales").fetchone()
    assert row is not None
    return int(row[0])


async def test_postgres_select_with_bound_parameters(postgres_dsn: str) -> None:
    secrets = {"ANALYTICS_DSN": postgres_dsn}
    result = await query(
        secrets, "SELECT region, sum(amount) AS total, min(sold) AS first FROM sales WHERE amount > %s "
        "GROUP BY region ORDER BY region", params=[10],
    )  # fmt: skip
    assert result == {
        "columns": ["region", "total", "first"],
        "rows": [["north", 150.5, "2026-01-03"], ["south", 80, "2026-01-04"]],
        "truncated": False,
    }
    named = await query(secrets, "SELECT count(*) FROM sales WHERE region = %(r)s", params={"r": "north"})
    assert named["rows"] == [[2]]
    assert (await query(secrets, "SHOW transaction_read_only"))["rows"] == [["on"]]
    assert (await query(secrets, "SELECT id FROM sales ORDER BY id", max_rows=2))["truncated"] is True
    many = await query(secrets, "SELECT n FROM generate_series(1, 5000000) AS n", max_rows=2)
    assert many == {"columns": ["n"], "rows": [[1], [2]], "truncated": True}
    plan = await query(secrets, "EXPLAIN SELECT * FROM sales")
    assert plan["columns"] == ["QUERY PLAN"] and "Seq Scan on sales" in plan["rows"][0][0]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("WITH gone AS (DELETE FROM sales RETURNING id) SELECT count(*) FROM gone", "must not contain data-modifying"),
        ("WITH x AS (INSERT INTO sales (region) VALUES ('x') RETURNING id) SELECT * FROM x", "data-modifying"),
        ("EXPLAIN ANALYZE DELETE FROM sales", "cannot execute DELETE in a read-only transaction"),
        ("SELECT nextval('sales_id_seq')", r"cannot execute nextval\(\) in a read-only transaction"),
        (
            "SELECT set_config('transaction_read_only', 'off', true), (SELECT 1)",
            "transaction read-write mode must be set before any query",
        ),
    ],
)
async def test_postgres_writes_through_a_read_query_fail_at_the_database(
    postgres_dsn: str, sql: str, message: str
) -> None:
    with pytest.raises(ToolError, match=message):
        await query({"ANALYTICS_DSN": postgres_dsn}, sql)
    assert pg_count(postgres_dsn) == 3


async def test_postgres_read_only_transaction_alone_refuses_writes(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agentflow.tools.data.check_read_only", lambda query, dialect: query)
    secrets = {"ANALYTICS_DSN": postgres_dsn}
    with pytest.raises(ToolError, match="cannot execute INSERT in a read-only transaction"):
        await query(secrets, "INSERT INTO sales (region) VALUES ('x')")
    with pytest.raises(ToolError, match="cannot insert multiple commands into a prepared statement"):
        await query(secrets, "SET TRANSACTION READ WRITE; DELETE FROM sales")
    assert pg_count(postgres_dsn) == 3


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("INSERT INTO sales (region) VALUES ('x')", "a INSERT statement is refused"),
        ("SELECT 1; DELETE FROM sales", "exactly one statement"),
        ("SELECT $$;$$; DELETE FROM sales", "exactly one statement"),
        ("SET default_transaction_read_only = off", "a SET statement is refused"),
        ("COPY sales TO STDOUT", "a COPY statement is refused"),
        ("PRAGMA table_info(sales)", "PRAGMA is SQLite's"),
    ],
)
async def test_postgres_first_check(postgres_dsn: str, sql: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        await query({"ANALYTICS_DSN": postgres_dsn}, sql)
    assert pg_count(postgres_dsn) == 3


async def test_postgres_dollar_quoted_semicolon_is_one_statement(postgres_dsn: str) -> None:
    assert (await query({"ANALYTICS_DSN": postgres_dsn}, "SELECT $tag$a;b$tag$ AS text"))["rows"] == [["a;b"]]


async def test_postgres_statement_timeout(postgres_dsn: str) -> None:
    with pytest.raises(ToolError, match=r"the query ran longer than 0.3 s and was stopped"):
        await query({"ANALYTICS_DSN": postgres_dsn}, "SELECT pg_sleep(30)", timeout=0.3)


async def test_postgres_options_in_the_dsn_cannot_turn_read_only_off(postgres_dsn: str) -> None:
    dsn = f"{postgres_dsn}?options=-c%20default_transaction_read_only%3Doff"
    with pytest.raises(ToolError, match=r"refused the query \(cannot execute nextval\(\) in a read-only transaction"):
        await query({"ANALYTICS_DSN": dsn}, "SELECT nextval('sales_id_seq')")


async def test_postgres_host_passes_the_egress_guard(postgres_dsn: str) -> None:
    secrets = {"ANALYTICS_DSN": postgres_dsn}
    with pytest.raises(EgressDenied, match=r"sql_query to 127.0.0.1 refused: host 127.0.0.1 is not in this workflow"):
        await query(secrets, "SELECT 1", egress=EgressPolicy(hosts=frozenset({"db.example.com"})))
    with pytest.raises(EgressDenied, match="a loopback address; an operator can open it with AGENTFLOW_EGRESS_ALLOW"):
        await query(secrets, "SELECT 1", egress=EgressPolicy(hosts=frozenset({"127.0.0.1"})))
    with pytest.raises(EgressDenied, match="loopback"):
        await query(secrets, "SELECT 1", egress=None)  # no policy: any public host, nothing internal


async def test_postgres_the_password_never_appears_in_errors() -> None:
    dsn = "postgresql://reporter:Tr0ub4dor-and-3@127.0.0.1:1/analytics"
    with pytest.raises(ToolError) as caught:
        await query({"ANALYTICS_DSN": dsn}, "SELECT 1", timeout=5)
    message = str(caught.value)
    assert message.startswith("cannot query the database named by secret ANALYTICS_DSN: ")
    assert "Tr0ub4dor-and-3" not in message and dsn not in message


async def test_postgres_a_unix_socket_dsn_is_refused() -> None:
    with pytest.raises(ToolError, match="must name one TCP host"):
        await query({"ANALYTICS_DSN": "postgresql:///analytics?host=/var/run/postgresql"}, "SELECT 1")


# --- in a workflow run ---------------------------------------------------------------------------


async def test_a_workflow_names_the_secret_and_never_stores_the_dsn(
    flow: AgentFlow, home: Path, sqlite_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTFLOW_SECRET_SHOP_DSN", sqlite_dsn)
    source = workflow(
        "shop-report",
        """
        permissions:
          egress: [localhost]   # sql_query is a network tool; a SQLite file reaches no host
        nodes:
          totals:
            type: tool
            tool: sql_query
            args: {database: SHOP_DSN, query: "SELECT count(*) AS n FROM sales WHERE region = ?", params: [north]}
        outputs:
          orders: "{{ totals.rows[0][0] }}"
        """,
    )
    run = await run_source(flow, source)
    assert run.status == "succeeded", run.error
    assert run.outputs == {"orders": 2}
    secret_path = sqlite_dsn.removeprefix("sqlite:///").encode()
    for path in home.iterdir() if home.exists() else ():
        if path.is_file():
            assert secret_path not in path.read_bytes(), f"the DSN is in {path.name}"
