#!/bin/sh
# The minio-setup Job (platform/base/minio/setup-job.yaml): waits for MinIO, then, idempotently, creates
# the bucket and one user per workload that reads or writes it, each from that workload's own Secret
# (<WORKLOAD>_ACCESS_KEY / <WORKLOAD>_SECRET_KEY, its AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), with
# one policy each (/setup/<workload>.json, from platform/base/minio/policies: only that workload's
# prefixes of the bucket, only the actions it uses). extract-images, the web app and the migrate Job
# have no S3 user. The root credentials stay with MinIO and this Job.
set -eu

BUCKET=dandelion
: "${MINIO_URL:?}" "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}"

tries=0
until mc alias set local "$MINIO_URL" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 100 ]; then
    echo "MinIO at $MINIO_URL did not accept the root credentials in time" >&2
    exit 1
  fi
  echo "waiting for MinIO at $MINIO_URL"
  sleep 3
done

mc mb --ignore-existing "local/$BUCKET"

# workload, access key, secret key: the policy dandelion-<workload> from /setup/<workload>.json, the user,
# and the one attached to the other. `policy create` replaces a policy of the same name, `user add` sets
# the secret of an existing user (the secret is never echoed).
workload_user() {
  policy="dandelion-$1"
  mc admin policy create local "$policy" "/setup/$1.json"
  mc admin user add local "$2" "$3" >/dev/null
  # Attaching a policy already attached is an error for MinIO ("The specified policy change is already
  # in effect.", XMinioAdminPolicyChangeAlreadyApplied): that one means done. (Shell only: the image is
  # minimal.)
  if ! out=$(mc admin policy attach local "$policy" --user "$2" 2>&1); then
    case "$out" in
      *"already in effect"* | *PolicyChangeAlreadyApplied*) ;;
      *) echo "$out" >&2; exit 1 ;;
    esac
  fi
  echo "user $2 holds policy $policy"
}

workload_user ingest-one-url "${INGEST_ONE_URL_ACCESS_KEY:?}" "${INGEST_ONE_URL_SECRET_KEY:?}"
workload_user validate-label "${VALIDATE_LABEL_ACCESS_KEY:?}" "${VALIDATE_LABEL_SECRET_KEY:?}"
workload_user predict "${PREDICT_ACCESS_KEY:?}" "${PREDICT_SECRET_KEY:?}"
workload_user train-model "${TRAIN_MODEL_ACCESS_KEY:?}" "${TRAIN_MODEL_SECRET_KEY:?}"
workload_user mlflow "${MLFLOW_ACCESS_KEY:?}" "${MLFLOW_SECRET_KEY:?}"
echo "bucket $BUCKET ready"
