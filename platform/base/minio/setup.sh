#!/bin/sh
# The minio-setup Job (platform/base/minio/setup-job.yaml): waits for MinIO, then, idempotently, creates
# the bucket, the application's user (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, what every Dandelion pod
# and MLflow use) and its policy (app-policy.json: the bucket and nothing else), and attaches the two.
# The root credentials stay with MinIO and this Job.
set -eu

BUCKET=dandelion
POLICY=dandelion-app
: "${MINIO_URL:?}" "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${AWS_ACCESS_KEY_ID:?}" "${AWS_SECRET_ACCESS_KEY:?}"

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
# `policy create` replaces a policy of the same name, `user add` sets the secret of an existing user.
mc admin policy create local "$POLICY" /setup/app-policy.json
mc admin user add local "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY"
# Attaching a policy already attached is an error for MinIO ("The specified policy change is already in
# effect.", XMinioAdminPolicyChangeAlreadyApplied): that one means done. (Shell only: the image is minimal.)
if ! out=$(mc admin policy attach local "$POLICY" --user "$AWS_ACCESS_KEY_ID" 2>&1); then
  case "$out" in
    *"already in effect"* | *PolicyChangeAlreadyApplied*) echo "user $AWS_ACCESS_KEY_ID already holds policy $POLICY" ;;
    *) echo "$out" >&2; exit 1 ;;
  esac
fi
echo "bucket $BUCKET ready; user $AWS_ACCESS_KEY_ID holds policy $POLICY"
