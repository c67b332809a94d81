#!/usr/bin/env bash
# install.sh PREFIX [SOURCE_DIR]: maint and its dependencies into a venv at PREFIX, from the maint
# checkout SOURCE_DIR (default: the one holding this script).
#
# The one install procedure: deploy/image/Dockerfile runs it to build the flow-run image, an
# operator can run it on a VM, and tests/test_kubernetes_files.py runs it into a fresh directory
# and runs a duty with what it installed. It checks what maint needs at run time before writing
# anything: Python >= 3.11 ($PYTHON, default python3, with its venv module) and pg_dump and
# pg_restore >= 15 on PATH (the image's Dockerfile installs them with apt; on a VM, the operator
# does). Running it again reinstalls maint from SOURCE_DIR into the same venv. pip's own
# environment applies: PIP_CONSTRAINT pins versions, PIP_INDEX_URL names a mirror.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 PREFIX [SOURCE_DIR]" >&2
  exit 2
fi
prefix=$1
source_dir=${2:-$(dirname "${BASH_SOURCE[0]}")/../..}
python=${PYTHON:-python3}

# Every missing piece is named at once, before the venv exists.
problems=()
if ! command -v "$python" >/dev/null; then
  problems+=("$python: not found on PATH; maint needs Python 3.11 or newer")
elif ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  problems+=("$python is Python $("$python" -c 'import platform; print(platform.python_version())'); maint needs 3.11 or newer")
elif ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
  problems+=("$python has no venv module with ensurepip (Debian: apt-get install python3-venv)")
fi
for program in pg_dump pg_restore; do
  if ! path=$(command -v "$program"); then
    problems+=("$program: not found on PATH; install the PostgreSQL client programs, version 15 or newer (Debian: postgresql-client-15)")
    continue
  fi
  version=$("$program" --version 2>&1 || true)   # "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
  major=$(sed -nE '1s/^[^0-9]*([0-9]+).*/\1/p' <<<"$version")
  if [ -z "$major" ] || [ "$major" -lt 15 ]; then
    problems+=("$path is '$version'; maint needs the PostgreSQL client programs 15 or newer")
  fi
done
if [ ! -f "$source_dir/pyproject.toml" ]; then
  problems+=("$source_dir has no pyproject.toml: SOURCE_DIR must be a maint checkout")
fi
if [ ${#problems[@]} -gt 0 ]; then
  echo "install.sh: cannot install maint into $prefix:" >&2
  printf '  %s\n' "${problems[@]}" >&2
  exit 1
fi

source_dir=$(cd "$source_dir" && pwd)   # absolute: pip reads a bare name as a package to download
"$python" -m venv "$prefix"             # an existing venv is kept, with what it holds
"$prefix/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$source_dir"

usage=$("$prefix/bin/maint" --help)   # the entry point starts
installed=$("$prefix/bin/python" -c '
import platform
from importlib.metadata import version
print("maint %s, prefect %s, Python %s" % (version("maint"), version("prefect"), platform.python_version()))')
echo "install.sh: installed into $prefix: $installed"
echo "install.sh: $prefix/bin/maint: ${usage%%$'\n'*}"
echo "install.sh: $(command -v pg_dump): $(pg_dump --version)"
echo "install.sh: $(command -v pg_restore): $(pg_restore --version)"
