# Sourced (not executed: it needs docker_process_sql) by the MariaDB image's entrypoint on the first start
# only, with an empty data directory, before 20-dandelion-catalog.sql (platform/mysql/init.sql). The
# entrypoint has already created the database `dandelion` (MARIADB_DATABASE) and root; this adds:
#
# - `dandelion`, the application's user, on `dandelion`.* only: the data (SELECT, INSERT, UPDATE, DELETE)
#   and what the catalog's Alembic migrations do when a process finds the schema behind (functions/lib/
#   schema.py: every process that opens the catalog upgrades it first): CREATE (tables; ALTER TABLE also
#   needs it), ALTER (columns, CHECK constraints), INDEX (CREATE/DROP INDEX), REFERENCES (foreign keys).
#   Not DROP: no migration drops a table today, and DROP would also allow TRUNCATE and DROP DATABASE on
#   the catalog; a future migration that needs it gets a GRANT beside it. Not GRANT OPTION, FILE,
#   PROCESS, SUPER or anything on other schemas.
# - the database `mlflow` and its owner `mlflow` (ALL on mlflow.* only: MLflow's server creates and
#   migrates its own tables).
#
# A data directory that already exists skips this script: change a password with ALTER USER.
dandelion_sql_string() {
  # The value as the body of a single-quoted SQL string literal (backslashes and quotes escaped).
  printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g"
}

: "${DANDELION_DB_PASSWORD:?set from dandelion-platform-secrets}" "${MLFLOW_DB_PASSWORD:?set from dandelion-platform-secrets}"

mysql_note "Creating users dandelion and mlflow, and the database mlflow"
docker_process_sql --database=mysql <<EOSQL
CREATE USER IF NOT EXISTS 'dandelion'@'%' IDENTIFIED BY '$(dandelion_sql_string "$DANDELION_DB_PASSWORD")';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, REFERENCES ON \`dandelion\`.* TO 'dandelion'@'%';
CREATE DATABASE IF NOT EXISTS \`mlflow\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE USER IF NOT EXISTS 'mlflow'@'%' IDENTIFIED BY '$(dandelion_sql_string "$MLFLOW_DB_PASSWORD")';
GRANT ALL PRIVILEGES ON \`mlflow\`.* TO 'mlflow'@'%';
EOSQL
