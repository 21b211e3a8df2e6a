# Sourced (not executed: it needs docker_process_sql) by the MariaDB image's entrypoint, a bash script, on
# the first start only, with an empty data directory, before 20-dandelion-catalog.sql (the schema and the
# seed rows, platform/mysql/init.sql) and 30-dandelion-grants.sql (platform/mysql/grants.sql). The
# entrypoint has already created the database `dandelion` (MARIADB_DATABASE) and root.
#
# Each database user is named, with its password, by the URL its clients connect with: one URL per
# workload, each in that workload's own Secret, so that a password is written in one place only. This
# creates:
# - the catalog's users, without any privilege: the schema's owner (dandelion_migrate, for the
#   catalog-migrate Job) and one role per workload (ingest-one-url, validate-label, extract-images,
#   train-model). 30-dandelion-grants.sql, rendered from functions/lib/privileges.py, gives each exactly
#   what it needs once the tables exist; their names must be the ones it grants to.
# - MLflow's database (the path of MLflow's URL) and its user, owner of that database and of nothing else.
# predict has no database user.
#
# A data directory that already exists skips this script: change a password with ALTER USER as well as
# in the Secret.

# The user, password and database of mysql+pymysql://USER:PASSWORD@HOST:PORT/DATABASE?OPTIONS, from the
# variable named $1, into dandelion_user, dandelion_password and dandelion_database. The values are
# URL-safe (letters, digits, - and _: platform/README.md), which is also what makes them safe in SQL.
dandelion_account() {
	local url="${!1:?$1 is not set: it comes from the workload Secret (platform/README.md)}"
	local rest="${url#*://}"
	local credentials="${rest%%@*}"
	local path="${rest#*/}"
	dandelion_user="${credentials%%:*}"
	dandelion_password="${credentials#*:}"
	dandelion_database="${path%%\?*}"
	case "$dandelion_user:$dandelion_password:$dandelion_database" in
		*[!A-Za-z0-9_:-]* | :* | *::* | *:) mysql_error "$1 is not mysql+pymysql://USER:PASSWORD@HOST:PORT/DATABASE with URL-safe values" ;;
	esac
}

dandelion_sql=""
for variable in MIGRATE_DB_URL INGEST_ONE_URL_DB_URL VALIDATE_LABEL_DB_URL EXTRACT_IMAGES_DB_URL TRAIN_MODEL_DB_URL; do
	dandelion_account "$variable"
	if [ "$dandelion_database" != "$MARIADB_DATABASE" ]; then
		mysql_error "$variable names database '$dandelion_database'; the catalog is '$MARIADB_DATABASE'"
	fi
	dandelion_sql+="CREATE USER IF NOT EXISTS '$dandelion_user'@'%' IDENTIFIED BY '$dandelion_password';"$'\n'
done
dandelion_account MLFLOW_DB_URL
dandelion_sql+="CREATE DATABASE IF NOT EXISTS \`$dandelion_database\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE USER IF NOT EXISTS '$dandelion_user'@'%' IDENTIFIED BY '$dandelion_password';
GRANT ALL PRIVILEGES ON \`$dandelion_database\`.* TO '$dandelion_user'@'%';"

mysql_note "Creating the catalog's database users, and MLflow's database and user"
docker_process_sql --database=mysql <<<"$dandelion_sql"
unset dandelion_sql dandelion_user dandelion_password dandelion_database
