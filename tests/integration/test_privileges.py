"""Least privilege on MariaDB, as a cluster's server starts: the real platform/base/mysql/users.sh (sourced
as MariaDB's entrypoint sources it), the committed init SQL and the rendered grants, in a throw-away
database with throw-away users. Each workload's library code then runs as its own user and does its work,
and what the workload must not do is refused by MariaDB with an access-denied error."""

from __future__ import annotations

import io
import os
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pymysql
import pytest
from PIL import Image
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import OperationalError

from functions.lib import catalog, privileges, retrain, schema
from functions.lib.catalog import CANONICAL_PREFIX, plants_data
from functions.lib.config import Settings
from functions.lib.errors import NotAnImage, Unavailable
from functions.lib.ingest import Ingestor
from functions.lib.layout import raw_key
from functions.lib.store import open_store
from functions.lib.submissions import Labeller, Submission, Suspect, queue_suspects
from tests.conftest import MYSQL, canonical
from tests.support import ROOT
from workflows.lib import dataset
from workflows.local.processes import free_port

pytestmark = pytest.mark.integration

USERS_SH = ROOT / "platform" / "base" / "mysql" / "users.sh"
INIT_SQL = ROOT / "platform" / "mysql" / "init.sql"
# The MariaDB image entrypoint's functions that users.sh uses, as the entrypoint defines them, but over
# TCP: docker_process_sql runs the client as root in MARIADB_DATABASE unless told another database.
ENTRYPOINT = (
    "docker_process_sql() {\n"
    '  mariadb --protocol=tcp -h127.0.0.1 -P3306 -uroot --database="$MARIADB_DATABASE" "$@"\n'
    "}\n"
    "mysql_note() { :; }\n"
    'mysql_error() { echo "$*" >&2; exit 1; }\n'
)
MIGRATE = "migrate"
WORKLOADS = (MIGRATE, *privileges.ROLES)
ACCESS_DENIED = {1044: "Access denied", 1142: "command denied", 1143: "command denied"}


def variable(workload: str) -> str:
    """The variable users.sh reads a workload's URL from (platform/base/mysql/statefulset.yaml)."""
    return f"{workload.upper().replace('-', '_')}_DB_URL"


@dataclass(frozen=True)
class Server:
    database: str
    mlflow_database: str
    users: dict[str, str]  # workload -> its user
    urls: dict[str, str]  # workload -> the URL it connects with, as in its Secret

    def url(self, workload: str, database: str | None = None) -> str:
        return self.urls[workload].replace(f"/{self.database}?", f"/{database or self.database}?")

    def runtime_users(self) -> dict[str, str]:
        return {workload: self.users[workload] for workload in privileges.ROLES}


def entrypoint(env: dict[str, str], step: str, script: str | None = None) -> None:
    """Run `step` as MariaDB's entrypoint would (a bash with its functions), `script` on its stdin."""
    done = subprocess.run(
        ["bash", "-c", ENTRYPOINT + step],  # noqa: S607
        env=env,
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def root_sql(*statements: str) -> None:
    connection = pymysql.connect(**MYSQL, autocommit=True)
    try:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        connection.close()


@pytest.fixture(scope="module")
def server(mysql_server: dict) -> Iterator[Server]:
    if shutil.which("mariadb") is None:
        pytest.skip("the mariadb client runs users.sh and the init SQL as the entrypoint does; not installed")
    suffix = uuid.uuid4().hex[:10]
    database = f"dandelion_roles_{suffix}"
    mlflow = f"{database}_mlflow"
    users = {workload: f"dl{suffix}_{workload.replace('-', '_')}" for workload in (*WORKLOADS, "mlflow")}
    urls = {
        workload: f"mysql+pymysql://{user}:{secrets.token_urlsafe(18)}@127.0.0.1:3306/"
        f"{mlflow if workload == 'mlflow' else database}?charset=utf8mb4"
        for workload, user in users.items()
    }
    env = dict(os.environ, MARIADB_DATABASE=database) | {variable(w): url for w, url in urls.items()}
    try:
        root_sql(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4")  # the entrypoint's MARIADB_DATABASE
        entrypoint(env, f". {USERS_SH}")  # 10-users.sh
        entrypoint(env, "docker_process_sql", INIT_SQL.read_text())  # 20-dandelion-catalog.sql
        roles = {workload: users[workload] for workload in privileges.ROLES}
        grants = privileges.mysql_grants_sql(database, roles, users[MIGRATE])
        entrypoint(env, "docker_process_sql", grants)  # 30-dandelion-grants.sql, for these names
        yield Server(database, mlflow, users, urls)
    finally:
        root_sql(
            f"DROP DATABASE IF EXISTS `{database}`",
            f"DROP DATABASE IF EXISTS `{mlflow}`",
            *(f"DROP USER IF EXISTS '{user}'@'%'" for user in users.values()),
        )


def settings(server: Server, workload: str, home: Path, **env: str) -> Settings:
    return Settings.from_env(
        {
            "DANDELION_HOME": str(home),
            "DANDELION_DB_URL": server.url(workload),
            "DANDELION_STORE_URL": (home / "objects").as_uri(),
            # Nobody listens: a retrain event stays in the outbox, its failed delivery recorded.
            "DANDELION_RETRAIN_WEBHOOK": f"http://127.0.0.1:{free_port()}/retrain",
            **env,
        }
    )


def png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), colour).save(out, format="PNG")
    return out.getvalue()


def ingested(url: str, label: str, sha256: str) -> dict[str, str]:
    return {"url_source": url, "url_hash": catalog.url_hash(url), "label": label, "status": "ingested"} | {
        "sha256": sha256,
        "url_s3": f"s3://dandelion/{raw_key(label, sha256)}",
    }


def test_a_refused_user_is_a_503_not_a_500(server: Server) -> None:
    """A wrong password (a rotation half done) and a missing grant: the server's fault, never the
    client's; each is Unavailable, which the functions answer with 503 and Retry-After."""
    wrong = server.url("ingest-one-url").replace("://dl", "://nobody_dl", 1)
    with pytest.raises(Unavailable, match=r"^the catalog is unavailable$"):
        catalog.open_catalog(wrong)
    extract = catalog.open_catalog(server.url("extract-images"))
    with pytest.raises(Unavailable, match=r"^the catalog is unavailable$"):
        catalog.record(extract, canonical("grass", 3), "grass", status="pending")


# ---------------------------------------------------------------------------------------------------------
# What each workload needs works, as its own user


def test_users_sh_creates_every_user_with_its_password_and_mlflow_its_database(server: Server) -> None:
    for workload in (*WORKLOADS, "mlflow"):
        with create_engine(server.urls[workload]).connect() as connection:
            user = connection.execute(text("SELECT CURRENT_USER()")).scalar_one()
        assert user == f"{server.users[workload]}@%"
    with create_engine(server.urls["mlflow"]).begin() as connection:
        connection.execute(text("CREATE TABLE experiments (id INT)"))  # MLflow creates its own tables
        assert connection.execute(text("SHOW TABLES")).scalars().all() == ["experiments"]


def test_ingest_one_url_ingests_and_records_a_failure_as_its_user(
    server: Server, source: str, tmp_path: Path
) -> None:
    ingestor = Ingestor.from_settings(
        settings(
            server,
            "ingest-one-url",
            tmp_path,
            DANDELION_SOURCE_MIRROR=f"{CANONICAL_PREFIX}={source}/",
            DANDELION_ALLOW_PRIVATE_URLS="1",
        )
    )
    outcome, row = ingestor.ingest(canonical("grass", 5), "grass")  # a seed row of the init SQL
    assert (outcome, row["status"], row["label"]) == ("ingested", "ingested", "grass")
    broken = f"{source}/hostile/page.jpg"
    catalog.record(ingestor.engine, broken, "grass", status="pending")
    with pytest.raises(NotAnImage):
        ingestor.ingest(broken, "grass")
    with ingestor.engine.connect() as connection:
        query = select(plants_data.c.status, plants_data.c.attempts).where(plants_data.c.url_source == broken)
        assert connection.execute(query).one() == ("failed", 1)


def test_extract_images_lists_the_rows_to_ingest_as_its_user(server: Server) -> None:
    rows = catalog.not_ingested(catalog.open_catalog(server.url("extract-images")))
    assert {"url": canonical("dandelion", 199), "label": "dandelion"} in rows


def test_validate_label_takes_a_submission_and_the_admin_accepts_it_as_its_user(
    server: Server, tmp_path: Path
) -> None:
    labeller = Labeller.from_settings(
        settings(
            server,
            "validate-label",
            tmp_path,
            DANDELION_RETRAIN_MIN_NEW_LABELS="1",  # the accept writes a retrain event to the outbox
        )
    )
    submission_id, new = labeller.submit(Submission(png((250, 220, 0)), "dandelion", "grass", 0.7, "3"))
    assert new
    assert [row["id"] for row in labeller.listing("pending", "upload", 10)] == [submission_id]
    decided = labeller.decide(submission_id, "accept", None)
    assert (decided["status"], decided["catalog"]["status"]) == ("accepted", "ingested")
    status = retrain.status(labeller.engine, 1)
    assert status["events"][0]["attempts"] == 1 and status["events"][0]["sent_at"] is None


def test_train_model_snapshots_queues_suspects_and_the_admin_decides_them(
    server: Server, tmp_path: Path
) -> None:
    """The snapshot and the label audit run as train-model's user; validate-label's user decides."""
    store = open_store((tmp_path / "objects").as_uri())
    grass, dandelion = png((20, 160, 20)), png((240, 210, 10))
    rows = []
    for n, (label, image) in enumerate((("grass", grass), ("dandelion", dandelion))):
        sha256 = catalog.url_hash(f"image {n}")  # any 64 hex digits: the snapshot reads rows, not images
        store.put(raw_key(label, sha256), image, "image/jpeg")
        rows.append(ingested(f"https://example.org/audited/{n}.jpg", label, sha256))
    with create_engine(server.url(MIGRATE)).begin() as connection:  # rows an earlier ingestion wrote
        connection.execute(plants_data.insert(), rows)

    trainer = catalog.open_catalog(server.url("train-model"))
    version, examples, _new_labels = dataset.snapshot(trainer, store)
    assert {(e.label, e.sha256) for e in examples} >= {(r["label"], r["sha256"]) for r in rows}
    assert store.exists(f"datasets/{version}/manifest.csv")
    suspects = [
        Suspect(raw_key(r["label"], r["sha256"]), r["sha256"], r["label"], other, 0.1, "train")
        for r, other in zip(rows, ("dandelion", "grass"), strict=True)
    ]
    assert queue_suspects(trainer, suspects, "audit-run") == 2
    assert queue_suspects(trainer, suspects, "audit-run") == 0  # queued once
    retrain.labels_trained(trainer, 0)  # training's one write to the retraining state: not refused

    labeller = Labeller.from_settings(settings(server, "validate-label", tmp_path))
    queued = {row["label"]: row["id"] for row in labeller.listing("pending", "suspect", 10)}
    relabelled = labeller.decide(queued["grass"], "relabel", None)["catalog"]
    excluded = labeller.decide(queued["dandelion"], "exclude", None)["catalog"]
    assert (relabelled["label"], excluded["status"]) == ("dandelion", "excluded")


def test_the_owner_migrates_and_grants_while_the_roles_cannot_migrate(server: Server) -> None:
    """A catalog one migration behind: a workload's user cannot bring it to the head and answers 503
    saying so; the owner migrates it and gives the roles their privileges (`dandelion migrate --grant`),
    after which the workload starts."""
    database = f"{server.database}_upgrade"
    root_sql(
        f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4",
        privileges.owner_statement(database, server.users[MIGRATE]),
    )
    try:
        owner = create_engine(server.url(MIGRATE, database))
        schema.upgrade(owner, "0004")  # the schema an older release deployed
        root_sql(f"GRANT SELECT ON `{database}`.`alembic_version` TO '{server.users['ingest-one-url']}'@'%'")
        behind = r"is at revision 0004, this code needs 0005, and database user '\w+' may not migrate it"
        with pytest.raises(Unavailable, match=behind):
            catalog.open_catalog(server.url("ingest-one-url", database))

        schema.upgrade(owner)
        privileges.grant(owner, server.runtime_users())
        ingest = catalog.open_catalog(server.url("ingest-one-url", database))
        catalog.record(ingest, canonical("grass", 1), "grass", status="pending")
        assert catalog.counts_by_status(ingest)["pending"] == 1
    finally:
        root_sql(f"DROP DATABASE IF EXISTS `{database}`")


# ---------------------------------------------------------------------------------------------------------
# What each workload must not do is refused


EVERY_ROLE = [
    ("SELECT user FROM mysql.user", 1142, "SELECT command denied"),
    ("SHOW TABLES FROM `{mlflow}`", 1044, "Access denied"),
    ("CREATE DATABASE `{database}_other`", 1044, "Access denied"),
]
REFUSED = {
    MIGRATE: [
        ("DROP TABLE plants_data", 1142, "DROP command denied"),
        ("TRUNCATE TABLE outbox", 1142, "DROP command denied"),
    ],
    "ingest-one-url": [
        ("UPDATE plants_data SET decided_by = 'ingest', decided_at = NOW()", 1143, "UPDATE command denied"),
        (
            "INSERT INTO plants_data (url_source, url_hash, label, decided_by)"
            " VALUES ('u', 'h', 'grass', 'ingest')",
            1143,
            "INSERT command denied",
        ),
        ("DELETE FROM plants_data", 1142, "DELETE command denied"),
        ("SELECT id FROM submissions", 1142, "SELECT command denied"),
        ("UPDATE retrain_state SET accepted_since_training = 1000", 1142, "UPDATE command denied"),
        ("INSERT INTO outbox (event_type, payload) VALUES ('x', '{{}}')", 1142, "INSERT command denied"),
        ("DROP TABLE plants_data", 1142, "DROP command denied"),
        ("TRUNCATE TABLE plants_data", 1142, "DROP command denied"),
        ("ALTER TABLE plants_data ADD COLUMN stolen INT", 1142, "ALTER command denied"),
        ("CREATE TABLE stolen (id INT)", 1142, "CREATE command denied"),
    ],
    "extract-images": [
        ("UPDATE plants_data SET status = 'pending'", 1142, "UPDATE command denied"),
        ("INSERT INTO plants_data (url_source, url_hash, label) VALUES ('u', 'h', 'grass')", 1142, "INSERT"),
        ("DELETE FROM plants_data", 1142, "DELETE command denied"),
        ("SELECT id FROM submissions", 1142, "SELECT command denied"),
    ],
    "validate-label": [
        ("DELETE FROM plants_data", 1142, "DELETE command denied"),
        ("DELETE FROM submissions", 1142, "DELETE command denied"),
        ("DELETE FROM outbox", 1142, "DELETE command denied"),
        ("UPDATE plants_data SET attempts = 0", 1143, "UPDATE command denied"),
        ("TRUNCATE TABLE submissions", 1142, "DROP command denied"),
        ("DROP TABLE outbox", 1142, "DROP command denied"),
        ("CREATE INDEX ix_stolen ON plants_data (label)", 1142, "INDEX command denied"),
    ],
    "train-model": [
        ("UPDATE plants_data SET label = 'grass'", 1142, "UPDATE command denied"),
        ("INSERT INTO plants_data (url_source, url_hash, label) VALUES ('u', 'h', 'grass')", 1142, "INSERT"),
        ("DELETE FROM plants_data", 1142, "DELETE command denied"),
        ("UPDATE submissions SET status = 'accepted', decided_by = 'audit'", 1143, "UPDATE command denied"),
        ("DELETE FROM submissions", 1142, "DELETE command denied"),
        ("SELECT id FROM outbox", 1142, "SELECT command denied"),
        ("DROP TABLE submissions", 1142, "DROP command denied"),
    ],
}
CASES = [
    (workload, statement, code, message)
    for workload in WORKLOADS
    for statement, code, message in [*REFUSED[workload], *EVERY_ROLE]
]


@pytest.mark.parametrize(
    ("workload", "statement", "code", "message"), CASES, ids=[f"{w}: {s[:48]}" for w, s, _c, _m in CASES]
)
def test_what_a_workload_must_not_do_is_refused(
    server: Server, workload: str, statement: str, code: int, message: str
) -> None:
    sql = statement.format(mlflow=server.mlflow_database, database=server.database)
    engine = create_engine(server.url(workload))
    with pytest.raises(OperationalError) as refused, engine.begin() as connection:
        connection.execute(text(sql))
    assert refused.value.orig is not None
    number, said = refused.value.orig.args
    assert (number, message in said, ACCESS_DENIED[number] in said) == (code, True, True), said
    assert f"'{server.users[workload]}'@" in said  # refused to that user, not to a missing one
