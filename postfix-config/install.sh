#!/usr/bin/env bash
# Put bombom-deliver behind Postfix, or take it away again. `make install`, `make uninstall` and
# `make db` run this; tests/test_postfix.py runs the same script with test paths.
#
#   install.sh install     venv, pipe user, spool, config file, Postfix settings, check, reload
#   install.sh uninstall   put back the Postfix settings we changed (venv, config, spool stay)
#   install.sh init-db     as the postgres superuser: database, schema, the two roles
#
# Settings come from the environment; the defaults suit a Debian host with Postfix and the local
# PostgreSQL cluster (see docs/postfix.md). Passwords come from BOMBOM_DELIVERY_PASSWORD and
# BOMBOM_LOOKUP_PASSWORD (never argv) and are put into DSNs that carry none. Running `install`
# twice changes nothing the second time.
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SOURCE=${SOURCE:-$(dirname "$HERE")}                  # the checkout to install from
DOMAINS=${DOMAINS:-bombom.news}                       # space- or comma-separated
PREFIX=${PREFIX:-/opt/bombom}                         # the venv is $PREFIX/venv
CONFIG_FILE=${CONFIG_FILE:-/etc/bombom/bombom.conf}
SPOOL_DIR=${SPOOL_DIR:-/var/spool/bombom}
PIPE_USER=${PIPE_USER:-bombom}
DATABASE=${DATABASE:-bombom}
DELIVERY_DSN=${DELIVERY_DSN:-postgresql://bombom_deliver@127.0.0.1:5432/$DATABASE}
LOOKUP_DSN=${LOOKUP_DSN:-postgresql://bombom_lookup@127.0.0.1:5432/$DATABASE}
DEADLINE=${DEADLINE:-60}                              # bombom-deliver's deadline_seconds
MAXPROC=${MAXPROC:-8}                                 # parallel deliveries = DB connections
MESSAGE_SIZE_LIMIT=${MESSAGE_SIZE_LIMIT:-20480000}
POSTFIX_CONFIG_DIR=${POSTFIX_CONFIG_DIR:-/etc/postfix}
PYTHON=${PYTHON:-/usr/bin/python3}                    # the pipe user must be able to run it
if [[ -z ${LOG:-} ]]; then                            # no syslog daemon: no /dev/log
  if [[ -S /dev/log ]]; then LOG=syslog; else LOG=/var/log/bombom/deliver.log; fi
fi
LOOKUP_HOSTS="" LOOKUP_DBNAME="" LOOKUP_PASSWORD=""    # filled in from LOOKUP_DSN
CHANGED=0                                              # reload Postfix only when something changed

SERVICE=bombom                                         # the master.cf name; main.cf uses bombom_*
MAP=$POSTFIX_CONFIG_DIR/bombom-recipients.cf
PASSFILE=$POSTFIX_CONFIG_DIR/bombom-recipients.pgpass   # the lookup password, for libpq
PRIOR=$POSTFIX_CONFIG_DIR/bombom-prior-settings        # what `uninstall` puts back
VENV=$PREFIX/venv
TIME_LIMIT=$((DEADLINE + 5 + 20))                      # deadline + watchdog grace + margin
VARS=(DOMAINS PREFIX CONFIG_FILE SPOOL_DIR PIPE_USER DELIVERY_DSN LOOKUP_HOSTS LOOKUP_DBNAME DEADLINE
      MAXPROC MESSAGE_SIZE_LIMIT POSTFIX_CONFIG_DIR TIME_LIMIT LOG)

say() { printf 'bombom install: %s\n' "$*"; }
die() { printf 'bombom install: error: %s\n' "$*" >&2; exit 1; }
pf() { local cmd=$1; shift; "$cmd" -c "$POSTFIX_CONFIG_DIR" "$@"; }  # postconf, postfix, postmap

# @NAME@ -> $NAME in a template. The quoted replacement keeps "&" literal (bash 5.2).
render() {
  local line name
  while IFS= read -r line || [[ -n $line ]]; do
    for name in "${VARS[@]}"; do line=${line//"@$name@"/"${!name}"}; done
    printf '%s\n' "$line"
  done <"$1"
}

# Put the password from the environment into a DSN that has none (URL-encoded).
with_password() {
  "$PYTHON" - "$1" "$2" <<'EOF'
import sys
from urllib.parse import quote, urlsplit, urlunsplit
dsn, password = sys.argv[1], sys.argv[2]
u = urlsplit(dsn)
if password and u.password is None and u.username:
    host = u.netloc.split("@", 1)[1]
    u = u._replace(netloc=f"{u.username}:{quote(password, safe='')}@{host}")
print(urlunsplit(u))
EOF
}

# The lookup DSN without its password (Postfix writes the host string into the mail log when the
# database is unreachable), plus a libpq passfile for the password. Prints the URI for "hosts =",
# the database name and the password, one a line.
lookup_parts() {
  "$PYTHON" - "$1" "$2" <<'EOF'
import sys
from urllib.parse import unquote, urlsplit, urlunsplit
u, passfile = urlsplit(sys.argv[1]), sys.argv[2]
password = unquote(u.password or "")
if u.password is not None:
    u = u._replace(netloc=u.netloc.replace(":" + u.password + "@", "@", 1))
    u = u._replace(query=f"{u.query}{'&' if u.query else ''}passfile={passfile}")
print(urlunsplit(u))
print(u.path.lstrip("/") or "bombom")
print(password)
EOF
}

# Write $2 from stdin only when the content differs; then set owner and mode either way.
install_file() {
  local dest=$1 owner=$2 mode=$3 tmp
  tmp=$(mktemp "$dest.XXXXXX")
  cat >"$tmp"
  chown "$owner" "$tmp"
  chmod "$mode" "$tmp"
  if [[ -f $dest ]] && cmp -s "$tmp" "$dest"; then
    rm -f "$tmp"
    chown "$owner" "$dest"
    chmod "$mode" "$dest"
  else
    mv -f "$tmp" "$dest"
    say "wrote $dest"
    CHANGED=1
  fi
}

# "key = value" lines of the main.cf fragment, placeholders filled.
main_cf_settings() { render "$HERE/main.cf" | grep -Ev '^[[:space:]]*(#|$)'; }

# The master.cf entry as one line (comments dropped, continuation lines joined).
master_cf_entry() { render "$HERE/master.cf" | grep -Ev '^[[:space:]]*(#|$)' | tr -s ' \n\t' ' ' | sed 's/ $//'; }

preflight() {
  [[ $(id -u) == 0 ]] || die "run as root (it creates a user and changes Postfix)"
  command -v postconf >/dev/null || die "Postfix is not installed (apt-get install postfix postfix-pgsql)"
  pf postconf -m | grep -qx pgsql || die "no pgsql lookup tables (apt-get install postfix-pgsql)"
  [[ -f $POSTFIX_CONFIG_DIR/main.cf ]] || die "$POSTFIX_CONFIG_DIR/main.cf missing: configure Postfix first (docs/postfix.md)"
  [[ $DEADLINE =~ ^[0-9]+$ && $DEADLINE -ge 1 ]] || die "DEADLINE must be whole seconds"
  [[ $MAXPROC =~ ^[0-9]+$ && $MAXPROC -ge 1 ]] || die "MAXPROC must be a number"
  "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || die "$PYTHON cannot make a venv (apt-get install python3-venv)"
  local d key
  # a service domain listed here too would be delivered by local(8), relayed, or aliased instead
  for d in ${DOMAINS//,/ }; do
    for key in mydestination relay_domains virtual_alias_domains; do
      pf postconf -xh "$key" | tr ', ' '\n\n' | grep -qix "$d" && die "$d is in $key; remove it there first"
    done
  done
  return 0
}

install_venv() {
  # Build only when the source changed: a stamp holds the hash of what was installed.
  local stamp=$VENV/.bombom-source hash
  hash=$(cd "$SOURCE" && find pyproject.toml bombom_pipe -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
         | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64)
  if [[ -x $VENV/bin/bombom-deliver && -f $stamp && $(cat "$stamp") == "$hash" ]]; then
    return 0
  fi
  say "installing bombom-pipe from $SOURCE into $VENV"
  mkdir -p "$PREFIX"
  [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
  # non-editable: the pipe user runs a copy, not the checkout (which may sit under /root)
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-warn-script-location "$SOURCE"
  # .pyc now, as root: the pipe user cannot write them and would pay the compile on every message
  "$VENV/bin/python" -m compileall -q "$VENV/lib" >/dev/null
  chmod -R go-w,a+rX "$PREFIX"
  echo "$hash" >"$stamp"
}

install_files() {
  getent passwd "$PIPE_USER" >/dev/null ||
    useradd --system --user-group --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin --comment "bombom-deliver (Postfix pipe)" "$PIPE_USER"
  install -d -o "$PIPE_USER" -g "$PIPE_USER" -m 0700 "$SPOOL_DIR"
  if [[ $LOG == /* ]]; then  # a log file the pipe user appends to
    [[ -d $(dirname "$LOG") ]] || install -d -o "$PIPE_USER" -g adm -m 0750 "$(dirname "$LOG")"
    [[ -f $LOG ]] || install -o "$PIPE_USER" -g adm -m 0640 /dev/null "$LOG"
  fi
  install -d -m 0755 "$(dirname "$CONFIG_FILE")"
  [[ $DELIVERY_DSN != *[\"\\]* ]] || die "DELIVERY_DSN must not contain \" or \\"
  install_file "$CONFIG_FILE" "root:$PIPE_USER" 0640 < <(render "$HERE/bombom.conf")
  install_file "$MAP" "root:postfix" 0640 < <(render "$HERE/bombom-recipients.cf")
  if [[ -n $LOOKUP_PASSWORD ]]; then  # libpq ignores a passfile that others may read
    local escaped=${LOOKUP_PASSWORD//\\/\\\\}
    install_file "$PASSFILE" "postfix:postfix" 0600 < <(printf '*:*:*:*:%s\n' "${escaped//:/\\:}")
  elif [[ -f $PASSFILE ]]; then
    rm -f "$PASSFILE"
    CHANGED=1
  fi
}

# Remember, once, what each setting we change was before (for `uninstall`), and keep backups.
remember_prior() {
  [[ -f $PRIOR ]] && return 0
  local f key
  for f in main.cf master.cf; do
    [[ -f $POSTFIX_CONFIG_DIR/$f.bombom-orig ]] || cp -p "$POSTFIX_CONFIG_DIR/$f" "$POSTFIX_CONFIG_DIR/$f.bombom-orig"
  done
  {
    echo "# main.cf before bombom-pipe was installed; 'key =' alone means it was not set"
    main_cf_settings | while IFS=' =' read -r key _; do
      pf postconf -n "$key" 2>/dev/null | grep . || echo "$key ="
    done
  } >"$PRIOR.tmp"
  mv "$PRIOR.tmp" "$PRIOR"
}

apply_postfix() {
  local entry current line key value
  entry=$(master_cf_entry)
  current=$(pf postconf -M "$SERVICE/unix" 2>/dev/null | tr -s ' \n\t' ' ' | sed 's/ $//')
  # first master.cf, so that postconf knows the bombom_* parameters when main.cf gets them
  if [[ $current != "$entry" ]]; then
    pf postconf -M "$SERVICE/unix=$entry"
    say "master.cf: $SERVICE service"
    CHANGED=1
  fi
  while IFS= read -r line; do
    key=${line%%=*}; key=${key%% *}
    value=${line#*=}; value=${value# }
    [[ $(pf postconf -nh "$key") == "$value" ]] && continue
    pf postconf -e "$key = $value"
    say "main.cf: $key = $value"
    CHANGED=1
  done < <(main_cf_settings)
}

check_and_reload() {
  pf postfix check
  if ((CHANGED == 0)); then
    say "Postfix settings unchanged"
  elif pf postfix status >/dev/null 2>&1; then
    pf postfix reload  # asynchronous: the new settings are live a moment later
    say "reloaded Postfix"
  else
    say "Postfix is not running; start it with: postfix start"
  fi
}

probe_lookup() {
  # not found is what we expect; anything on stderr means the database could not be asked
  local err d=${DOMAINS%%[ ,]*}
  err=$(pf postmap -q "no-such-member-probe@$d" "pgsql:$MAP" 2>&1 >/dev/null) || true
  if [[ -n $err ]]; then
    say "WARNING: the recipient lookup cannot query the database (LOOKUP_DSN, pg_hba.conf, make db):"
    say "  ${err%%$'\n'*}"
    say "  until it can, smtpd answers 451 4.3.0 to every recipient"
  fi
}

# The passwords of an earlier install, so that running `make install` again without the
# BOMBOM_*_PASSWORD variables keeps them instead of writing DSNs without any. Prints two lines:
# the delivery password (from CONFIG_FILE), the lookup password (from the passfile).
installed_passwords() {
  "$PYTHON" - "$CONFIG_FILE" "$PASSFILE" <<'EOF'
import sys, tomllib
from urllib.parse import unquote, urlsplit
try:
    with open(sys.argv[1], "rb") as f:
        print(unquote(urlsplit(tomllib.load(f).get("database_url", "")).password or ""))
except (OSError, ValueError):
    print("")
try:
    line = open(sys.argv[2]).readline().rstrip("\n")
    print(line.split(":", 4)[4].replace("\\:", ":").replace("\\\\", "\\"))
except (OSError, IndexError):
    print("")
EOF
}

cmd_install() {
  local old_delivery old_lookup
  { read -r old_delivery; read -r old_lookup; } < <(installed_passwords)
  LOOKUP_DSN=$(with_password "$LOOKUP_DSN" "${BOMBOM_LOOKUP_PASSWORD:-$old_lookup}")
  DELIVERY_DSN=$(with_password "$DELIVERY_DSN" "${BOMBOM_DELIVERY_PASSWORD:-$old_delivery}")
  { read -r LOOKUP_HOSTS; read -r LOOKUP_DBNAME; read -r LOOKUP_PASSWORD; } \
    < <(lookup_parts "$LOOKUP_DSN" "$PASSFILE")
  preflight
  install_venv
  install_files
  remember_prior
  apply_postfix
  check_and_reload
  probe_lookup
  say "done: mail for $DOMAINS goes to $VENV/bin/bombom-deliver as $PIPE_USER"
}

cmd_uninstall() {
  [[ $(id -u) == 0 ]] || die "run as root"
  local line key
  if pf postconf -M "$SERVICE/unix" 2>/dev/null | grep -q .; then
    pf postconf -MX "$SERVICE/unix"
    say "master.cf: removed the $SERVICE service"
  fi
  if [[ -f $PRIOR ]]; then
    while IFS= read -r line; do
      [[ $line == \#* || -z $line ]] && continue
      key=${line%%=*}; key=${key%% *}
      if [[ $line =~ ^[^=]*=[[:space:]]*$ ]]; then
        pf postconf -X "$key"
      else
        pf postconf -e "$line"
      fi
    done <"$PRIOR"
    rm -f "$PRIOR"
    say "main.cf: restored the settings from before the install"
  fi
  # bombom_* parameters without the service would only draw "unused parameter" warnings
  { pf postconf -n | grep -o "^${SERVICE}_[a-z_]*" || true; } | xargs -r -n1 "postconf" -c "$POSTFIX_CONFIG_DIR" -X
  rm -f "$MAP" "$PASSFILE"
  CHANGED=1
  check_and_reload
  say "left in place: $VENV, $CONFIG_FILE, $SPOOL_DIR (raw mail), user $PIPE_USER, backups *.bombom-orig"
}

# As the postgres OS user: create the database, the schema and the two least-privilege roles,
# with the passwords from BOMBOM_DELIVERY_PASSWORD / BOMBOM_LOOKUP_PASSWORD.
cmd_init_db() {
  [[ $(id -u) == 0 ]] || die "run as root"
  [[ -x $VENV/bin/bombom ]] || die "$VENV missing: run 'make install' first"
  local conf
  # the local cluster's default socket, as its superuser (peer authentication)
  runuser -u postgres -- psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'" |
    grep -q 1 || runuser -u postgres -- createdb "$DATABASE"
  conf=$(mktemp /tmp/bombom-admin.XXXXXX)
  trap 'rm -f "$conf"' RETURN
  printf 'database_url = "postgresql:///%s"\nlog = "stderr"\n' "$DATABASE" >"$conf"
  chown postgres "$conf"; chmod 0600 "$conf"
  runuser -u postgres -- env BOMBOM_CONFIG="$conf" "$VENV/bin/bombom" init-db \
    --delivery-role "$(dbuser_of "$DELIVERY_DSN")" --lookup-role "$(dbuser_of "$LOOKUP_DSN")"
}

dbuser_of() { "$PYTHON" -c 'import sys, urllib.parse as p; print(p.urlsplit(sys.argv[1]).username)' "$1"; }

case ${1:-} in
  install) cmd_install ;;
  uninstall) cmd_uninstall ;;
  init-db) cmd_init_db ;;
  *) echo "usage: $0 install|uninstall|init-db (settings in the environment; see the top of this file)" >&2; exit 2 ;;
esac
