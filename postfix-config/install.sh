#!/usr/bin/env bash
# Put bombom-deliver behind Postfix, or take it away again. `make install`, `make uninstall` and
# `make db` run this; tests/test_postfix.py runs the same script with test paths.
#
#   install.sh install     venv, `bombom` on PATH, pipe user, spool, config files, Postfix
#                          settings, check, reload
#   install.sh init-db     the database, its owner role (the admin side), schema, the delivery and
#                          lookup roles, /etc/bombom/admin.conf for root; then checks the lookup
#   install.sh uninstall   put back the Postfix settings we changed (venv, config, spool stay);
#                          refused while mail for the service domains is queued, unless FORCE=1
#
# Settings come from the environment; the defaults suit a Debian host with Postfix and the local
# PostgreSQL cluster (see docs/postfix.md). Passwords come from BOMBOM_DELIVERY_PASSWORD,
# BOMBOM_LOOKUP_PASSWORD and BOMBOM_ADMIN_PASSWORD (never argv), else from an earlier install
# (the admin role's is made up once); they are put into DSNs that carry none. What needs parsing
# or arithmetic (DSNs, Postfix's time limit) comes from the package: `bombom postfix-settings`.
# Running `install` twice changes nothing the second time.
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SOURCE=${SOURCE:-$(dirname "$HERE")}                  # the checkout to install from

# The settings live in one place, INSTALL_ENV, written by every successful install and read by
# install, init-db and uninstall: a variable given in the environment wins, else the value
# remembered there, else the default below. So a re-run without variables changes nothing, and
# a change (say DOMAINS) happens only when given, and is shown.
INSTALL_ENV=${INSTALL_ENV:-/etc/bombom/install.env}
REMEMBERED=(DOMAINS MODE PREFIX CONFIG_FILE SPOOL_DIR PIPE_USER DATABASE DELIVERY_DSN LOOKUP_DSN
            ADMIN_DSN ADMIN_CONFIG LOOKUP_PASSFILE BIN_DIR LOGROTATE_DIR DEADLINE MAXPROC LOG
            DNS_SERVERS MAILDIR_BASE SYSTEMD_DIR WORKER_SOCKET LMTP_SOCKET MESSAGE_SIZE_LIMIT
            POSTFIX_CONFIG_DIR PYTHON AUTH_METHOD AUTHSERV_ID SMTP_SERVICE)
declare -A GIVEN=() EARLIER=()
for name in "${REMEMBERED[@]}"; do [[ -n ${!name+set} ]] && GIVEN[$name]=1; done
if [[ -f $INSTALL_ENV ]]; then
  while IFS= read -r line || [[ -n $line ]]; do          # NAME=value lines; nothing is evaluated
    name=${line%%=*}
    [[ $line == *=* && " ${REMEMBERED[*]} " == *" $name "* ]] || continue
    EARLIER[$name]=${line#*=}
    [[ -n ${GIVEN[$name]:-} ]] || printf -v "$name" '%s' "${line#*=}"
  done <"$INSTALL_ENV"
fi

DOMAINS=${DOMAINS:-bombom.news}                       # space- or comma-separated
PREFIX=${PREFIX:-/opt/bombom}                         # the venv is $PREFIX/venv
CONFIG_FILE=${CONFIG_FILE:-/etc/bombom/bombom.conf}
SPOOL_DIR=${SPOOL_DIR:-/var/spool/bombom}
PIPE_USER=${PIPE_USER:-bombom}
DATABASE=${DATABASE:-bombom}
DELIVERY_DSN=${DELIVERY_DSN:-postgresql://bombom_deliver@127.0.0.1:5432/$DATABASE}
LOOKUP_DSN=${LOOKUP_DSN:-postgresql://bombom_lookup@127.0.0.1:5432/$DATABASE}
ADMIN_DSN=${ADMIN_DSN:-postgresql://bombom_admin@127.0.0.1:5432/$DATABASE}   # the schema owner
ADMIN_CONFIG=${ADMIN_CONFIG:-$(dirname "$CONFIG_FILE")/admin.conf}      # root's, by make db
LOOKUP_PASSFILE=${LOOKUP_PASSFILE:-$(dirname "$CONFIG_FILE")/postfix-lookup.pgpass}
BIN_DIR=${BIN_DIR:-/usr/local/bin}                    # where `bombom` is linked
LOGROTATE_DIR=${LOGROTATE_DIR:-/etc/logrotate.d}      # for a LOG file
DEADLINE=${DEADLINE:-60}                              # bombom-deliver's deadline_seconds
MAXPROC=${MAXPROC:-8}                                 # parallel deliveries = DB connections
MODE=${MODE:-push}  # push (cold), worker (push + bombom worker), pull (virtual(8) + worker), lmtp
MAILDIR_BASE=${MAILDIR_BASE:-/var/spool/bombom-maildir}  # pull: virtual(8) writes Maildir/ here
SYSTEMD_DIR=${SYSTEMD_DIR:-/etc/systemd/system}          # where bombom-worker.service goes
WORKER_SOCKET=${WORKER_SOCKET:-/run/bombom/worker.sock}  # the worker's, for bombom-deliver
LMTP_SOCKET=${LMTP_SOCKET:-/run/bombom/lmtp.sock}        # lmtp: the worker's, for Postfix
MESSAGE_SIZE_LIMIT=${MESSAGE_SIZE_LIMIT:-20480000}
POSTFIX_CONFIG_DIR=${POSTFIX_CONFIG_DIR:-/etc/postfix}
SMTP_SERVICE=${SMTP_SERVICE:-smtp/inet}               # master.cf's SMTP listener: postscreen goes here
PYTHON=${PYTHON:-/usr/bin/python3}                    # the pipe user must be able to run it
DNS_SERVERS=${DNS_SERVERS:-}                          # DKIM/SPF/DMARC lookups; empty: the system's
# Who sent it: dkim (verified by bombom-deliver) or authentication-results (trust the header a
# milter in front adds as AUTHSERV_ID; default: Postfix's myhostname, as OpenDKIM's own default).
# An earlier hand edit of bombom.conf that chose authentication-results is taken as given.
if [[ -z ${AUTH_METHOD:-} ]] && grep -Eq '^auth_method[[:space:]]*=[[:space:]]*"authentication-results"' "$CONFIG_FILE" 2>/dev/null; then
  AUTH_METHOD=authentication-results
  AUTHSERV_ID=${AUTHSERV_ID:-$(sed -nE 's/^authserv_id[[:space:]]*=[[:space:]]*"([^"]*)".*/\1/p' "$CONFIG_FILE" | head -1)}
fi
AUTH_METHOD=${AUTH_METHOD:-dkim}
AUTHSERV_ID=${AUTHSERV_ID:-}
if [[ -z ${LOG:-} ]]; then                            # no syslog daemon: no /dev/log
  if [[ -S /dev/log ]]; then LOG=syslog; else LOG=/var/log/bombom/deliver.log; fi
fi

# Installed by a version that kept no INSTALL_ENV: take what reroutes mail from what it wrote.
if [[ ! -f $INSTALL_ENV && -f $POSTFIX_CONFIG_DIR/bombom-prior-settings ]]; then
  earlier() { sed -nE "s/^$1 = \"?([^\"]*)\"?$/\1/p" "$2" 2>/dev/null | head -1; }
  for pair in DOMAINS:domain:$POSTFIX_CONFIG_DIR/bombom-recipients.cf \
              DNS_SERVERS:dns_servers:$CONFIG_FILE DEADLINE:deadline_seconds:$CONFIG_FILE \
              LOG:log:$CONFIG_FILE SPOOL_DIR:spool_dir:$CONFIG_FILE; do
    IFS=: read -r name key file <<<"$pair"
    [[ -n ${GIVEN[$name]:-} ]] && continue
    value=$(earlier "$key" "$file")
    [[ -n $value || $name == DNS_SERVERS ]] && [[ -f $file ]] || continue
    printf -v "$name" '%s' "$value"
    EARLIER[$name]=$value
  done
  if [[ -z ${GIVEN[MODE]:-} ]]; then
    case $(postconf -c "$POSTFIX_CONFIG_DIR" -h virtual_transport 2>/dev/null) in
      virtual) MODE=pull ;;
      *) grep -q '^worker_socket' "$CONFIG_FILE" 2>/dev/null && MODE=worker ;;
    esac
    EARLIER[MODE]=$MODE
  fi
fi
DOMAIN_LIST=$(tr -s ', ' ',,' <<<"$DOMAINS" | sed 's/^,//; s/,$//')   # a,b for the config files
CHANGED=0                                              # reload Postfix only when something changed

SERVICE=bombom                                         # the master.cf name; main.cf uses bombom_*
LMTP_SERVICE=bombomlmtp                                # MODE=lmtp's lmtp(8) client in master.cf
MAP=$POSTFIX_CONFIG_DIR/bombom-recipients.cf
HEADER_CHECKS=$POSTFIX_CONFIG_DIR/bombom-header-checks   # authentication-results mode's
MEMBERS_MAP=$POSTFIX_CONFIG_DIR/bombom-members         # hash: table `bombom members` keeps
BLOCK_MAPS="bombom-blocks-senders.cf bombom-blocks-clients.cf"  # pgsql: operator's blocklist
BLOCKED=$POSTFIX_CONFIG_DIR/bombom-blocked             # -senders (hash:), -clients (cidr:): pull's
OLD_PASSFILE=$POSTFIX_CONFIG_DIR/bombom-recipients.pgpass  # earlier installs kept it there
PRIOR=$POSTFIX_CONFIG_DIR/bombom-prior-settings        # what `uninstall` puts back
PRIOR_MASTER=$POSTFIX_CONFIG_DIR/bombom-prior-master   # master.cf entries before postscreen
CONF_BASE=$(dirname "$INSTALL_ENV")/bombom.conf.installed  # what install last wrote: hand edits
VENV=$PREFIX/venv
RUNTIME_DIRS=$( (dirname "$WORKER_SOCKET"; [[ $MODE != lmtp ]] || dirname "$LMTP_SOCKET") | sort -u | paste -sd ' ')
# from `bombom postfix-settings` (load_settings)
SETTINGS=(TIME_LIMIT DELIVERY_DSN DELIVERY_ROLE DELIVERY_PASSWORD LOOKUP_HOSTS LOOKUP_DBNAME
          LOOKUP_ROLE LOOKUP_PASSWORD LOOKUP_PASSFILE_LINE ADMIN_DSN ADMIN_ROLE ADMIN_PASSWORD)
VARS=(DOMAINS DOMAIN_LIST PREFIX CONFIG_FILE SPOOL_DIR PIPE_USER DELIVERY_DSN LOOKUP_HOSTS
      LOOKUP_DBNAME LOOKUP_PASSFILE ADMIN_DSN DEADLINE MAXPROC MESSAGE_SIZE_LIMIT
      POSTFIX_CONFIG_DIR TIME_LIMIT LOG LOGROTATE_DIR DNS_SERVERS MEMBERS_MAP
      WORKER_SOCKET_LINE LMTP_SOCKET_LINE AUTH_METHOD_LINE AUTHSERV_ID_LINE)
WORKER_SOCKET_LINE='# worker_socket: none (MODE=push)'   # bombom.conf; see worker_mode below
LMTP_SOCKET_LINE='# lmtp_socket: none (MODE=lmtp only)'
AUTH_METHOD_LINE='# auth_method = "authentication-results"'   # bombom.conf; see auth_mode below
AUTHSERV_ID_LINE='# authserv_id = "mx.bombom.news"'

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

# The values in SETTINGS, computed by the installed package from our variables (exported to
# it; passwords only ever in the environment). NAME=value lines; nothing is evaluated.
load_settings() {
  local out line name
  export DEADLINE DELIVERY_DSN LOOKUP_DSN ADMIN_DSN CONFIG_FILE ADMIN_CONFIG LOOKUP_PASSFILE
  out=$("$VENV/bin/bombom" postfix-settings) || die "cannot compute the settings (above)"
  while IFS= read -r line; do
    name=${line%%=*}
    [[ " ${SETTINGS[*]} " == *" $name "* ]] && printf -v "$name" '%s' "${line#*=}"
  done < <(printf '%s\n' "$out")
  return 0
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
main_cf_settings() { render "$HERE/main.cf" | grep -Ev '^[[:space:]]*(#|$)' | mode_settings | auth_settings; }

# The master.cf entry as one line (comments dropped, continuation lines joined).
master_cf_entry() { render "$HERE/master.cf" | grep -Ev '^[[:space:]]*(#|$)' | tr -s ' \n\t' ' ' | sed 's/ $//'; }

preflight() {
  [[ $(id -u) == 0 ]] || die "run as root (it creates a user and changes Postfix)"
  command -v postconf >/dev/null || die "Postfix is not installed (apt-get install postfix postfix-pgsql)"
  pf postconf -m | grep -qx pgsql || die "no pgsql lookup tables (apt-get install postfix-pgsql)"
  [[ -f $POSTFIX_CONFIG_DIR/main.cf ]] || die "$POSTFIX_CONFIG_DIR/main.cf missing: configure Postfix first (docs/postfix.md)"
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
  install -d -m 0755 "$(dirname "$CONFIG_FILE")" "$(dirname "$LOOKUP_PASSFILE")"
  install_config
  install_file "$MAP" "root:postfix" 0640 < <(render "$HERE/bombom-recipients.cf")
  if [[ $AUTH_METHOD == authentication-results ]]; then
    install_file "$HEADER_CHECKS" root:root 0644 < <(render "$HERE/bombom-header-checks")
  fi
  for f in $BLOCK_MAPS; do  # the operator's blocklist (check_client/sender_access)
    install_file "$POSTFIX_CONFIG_DIR/$f" "root:postfix" 0640 < <(render "$HERE/$f")
  done
  # the lookup password, for libpq in proxymap (which runs as postfix): outside Postfix's
  # directory, which must hold only root's files; libpq ignores a passfile others may read
  if [[ -n $LOOKUP_PASSFILE_LINE ]]; then
    install_file "$LOOKUP_PASSFILE" "postfix:postfix" 0600 < <(printf '%s\n' "$LOOKUP_PASSFILE_LINE")
  fi
  rm -f "$OLD_PASSFILE"
  if [[ $LOG == /* ]]; then
    install -d -m 0755 "$LOGROTATE_DIR"
    install_file "$LOGROTATE_DIR/bombom" root:root 0644 < <(render "$HERE/logrotate")
  fi
}

# `bombom` on PATH: a link to the venv's command (replaced only if it is our link).
link_command() {
  local link=$BIN_DIR/bombom
  [[ -L $link && $(readlink "$link") == "$VENV/bin/bombom" ]] && return 0
  [[ -e $link && ! -L $link ]] && die "$link exists and is not a link to $VENV/bin/bombom"
  install -d -m 0755 "$BIN_DIR"
  ln -sfn "$VENV/bin/bombom" "$link"
  say "linked $link"
}

# The main.cf keys any mode sets (main.cf's and main-pull.cf's), each once.
all_main_cf_keys() {
  grep -Ehv '^[[:space:]]*(#|$)' "$HERE"/main*.cf | sed -E 's/[[:space:]]*=.*//' | awk '!seen[$0]++'
}

# Remember, once, what each setting any mode changes was before (for `uninstall`, and for a
# switch of MODE), and keep backups. A record that lacks keys (written by an earlier version for
# its mode only) gets them as they were in main.cf.bombom-orig, the copy from before that install.
remember_prior() {
  local f key keys from=$POSTFIX_CONFIG_DIR
  for f in main.cf master.cf; do
    [[ -f $POSTFIX_CONFIG_DIR/$f.bombom-orig ]] || cp -p "$POSTFIX_CONFIG_DIR/$f" "$POSTFIX_CONFIG_DIR/$f.bombom-orig"
  done
  keys=$(all_main_cf_keys)
  if [[ -f $PRIOR ]]; then
    keys=$(grep -vxFf <(sed -E 's/[[:space:]]*=.*//' "$PRIOR") <<<"$keys" || true)
    [[ -z $keys ]] && return 0
    from=$(mktemp -d)
    for f in main.cf master.cf; do cp "$POSTFIX_CONFIG_DIR/$f.bombom-orig" "$from/$f"; done
  fi
  {
    if [[ -f $PRIOR ]]; then
      cat "$PRIOR"
    else
      echo "# main.cf before bombom-pipe was installed; 'key =' alone means it was not set"
    fi
    for key in $keys; do
      postconf -c "$from" -n "$key" 2>/dev/null | grep . || echo "$key ="
    done
  } >"$PRIOR.tmp"
  mv "$PRIOR.tmp" "$PRIOR"
  [[ $from == "$POSTFIX_CONFIG_DIR" ]] || rm -rf "$from"
}

# Put one line of $PRIOR back into main.cf: "key = value", or "key =" (not set: removed).
# Fails when there was nothing to change. (main.cf itself is read for the key: postconf hides
# a parameter it does not know, e.g. bombom_* once the service is gone.)
put_back() {
  local line=$1 key
  key=${line%%=*}; key=${key%% *}
  if [[ $line =~ ^[^=]*=[[:space:]]*$ ]]; then
    grep -Eq "^$key[[:space:]]*=" "$POSTFIX_CONFIG_DIR/main.cf" || return 1
    pf postconf -X "$key"
  else
    [[ "$key = $(pf postconf -nh "$key" 2>/dev/null)" != "$line" ]] || return 1
    pf postconf -e "$line"
  fi
}

apply_postfix() {
  local entry current line key value keys
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
  # what another MODE set and this one does not: as it was before the install
  keys=$(main_cf_settings | sed -E 's/[[:space:]]*=.*//')
  while IFS= read -r line; do
    [[ $line == \#* || -z $line ]] && continue
    key=${line%%=*}; key=${key%% *}
    grep -qxF "$key" <<<"$keys" && continue
    if put_back "$line"; then
      say "main.cf: $key as before the install"
      CHANGED=1
    fi
  done <"$PRIOR"
}

# postscreen(8) in front of smtpd (master-postscreen.cf) on SMTP_SERVICE, when master.cf has it;
# the entries it replaces or adds are recorded once (PRIOR_MASTER) for `uninstall`.
postscreen_entries() {
  local SMTP_LISTEN=${SMTP_SERVICE%/*} VARS=("${VARS[@]}" SMTP_LISTEN)
  render "$HERE/master-postscreen.cf" | grep -Ev '^[[:space:]]*(#|$)' | tr -s ' \t' ' ' | sed 's/ $//'
}

apply_postscreen() {
  local line name type key current
  if [[ -z $(pf postconf -M "$SMTP_SERVICE" 2>/dev/null) ]]; then
    say "master.cf has no $SMTP_SERVICE service: postscreen not put in front (SMTP_SERVICE names it)"
    return 0
  fi
  if [[ ! -f $PRIOR_MASTER ]]; then
    while IFS= read -r line; do
      name=${line%% *}; type=$(awk '{print $2}' <<<"$line"); key=$name/$type
      current=$(pf postconf -M "$key" 2>/dev/null | tr -s ' \n\t' ' ' | sed 's/ $//')
      printf '%s=%s\n' "$key" "$current"
    done < <(postscreen_entries) >"$PRIOR_MASTER.tmp"
    mv "$PRIOR_MASTER.tmp" "$PRIOR_MASTER"
  fi
  while IFS= read -r line; do
    name=${line%% *}; type=$(awk '{print $2}' <<<"$line"); key=$name/$type
    current=$(pf postconf -M "$key" 2>/dev/null | tr -s ' \n\t' ' ' | sed 's/ $//')
    [[ $current == "$line" ]] && continue
    pf postconf -M "$key=$line"
    say "master.cf: $key = $line"
    CHANGED=1
  done < <(postscreen_entries)
}

# master.cf's entries as they were before postscreen (an empty one was not there: removed)
put_back_master() {
  local line key entry
  [[ -f $PRIOR_MASTER ]] || return 0
  while IFS= read -r line; do
    key=${line%%=*}; entry=${line#*=}
    if [[ -z $entry ]]; then
      pf postconf -M "$key" 2>/dev/null | grep -q . && pf postconf -MX "$key"
    else
      pf postconf -M "$key=$entry"
    fi
  done <"$PRIOR_MASTER"
  rm -f "$PRIOR_MASTER"
  say "master.cf: the SMTP service as before the install (no postscreen)"
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

# Can Postfix ask the database who is a member? Not found is the answer we expect; anything on
# stderr means the database could not be asked. Sets LOOKUP_ERROR.
LOOKUP_ERROR=""
probe_lookup() {
  local d=${DOMAINS%%[ ,]*}
  LOOKUP_ERROR=$(pf postmap -q "no-such-member-probe@$d" "pgsql:$MAP" 2>&1 >/dev/null) || true
  LOOKUP_ERROR=${LOOKUP_ERROR%%$'\n'*}
  [[ -z $LOOKUP_ERROR ]] && say "lookup OK"
  [[ -z $LOOKUP_ERROR ]]
}

# -- MODE: push (cold), worker (push + bombom worker), pull (virtual(8) + Maildir + worker),
#    lmtp (lmtp(8) to the worker) ----------------------------------------------------------------

# Files waiting in pull mode's Maildir (new/ and claimed/): what a worker must still ingest.
# Counted once per install (WAITING), so that what it says and the worker's command agree.
WAITING=""
waiting_in_maildir() {
  [[ -n $WAITING ]] && { echo "$WAITING"; return 0; }
  local d n=0
  for d in new claimed; do
    [[ -d $MAILDIR_BASE/Maildir/$d ]] && n=$((n + $(find "$MAILDIR_BASE/Maildir/$d" -mindepth 1 -maxdepth 1 | wc -l)))
  done
  echo "$n"
}

# The worker's command line (the unit's ExecStart, or what to run without systemd). In every
# worker mode it keeps draining a Maildir that pull mode left files in.
worker_command() {
  local args="$VENV/bin/bombom --config=$CONFIG_FILE worker --socket=$WORKER_SOCKET"
  [[ $MODE == lmtp ]] && args="$args --processes=$MAXPROC"
  # leaving pull: virtual(8) may still write what Postfix resolved before the reload
  if [[ $MODE == pull || ${EARLIER[MODE]:-} == pull ]] || (( $(waiting_in_maildir) > 0 )); then
    args="$args --maildir=$MAILDIR_BASE/Maildir"
  fi
  echo "$args"
}

# VARS plus what only these files use
render_mode() {
  local VARS=("${VARS[@]}" MAILDIR_BASE SYSTEMD_DIR PIPE_UID PIPE_GID WORKER_COMMAND WORKER_WRITES
              WORKER_SOCKET LMTP_SOCKET LMTP_SERVICE LMTP_DATA_DONE_TIMEOUT RUNTIME_DIRS)
  local PIPE_UID PIPE_GID WORKER_COMMAND WORKER_WRITES="$RUNTIME_DIRS"
  local LMTP_DATA_DONE_TIMEOUT=$((TIME_LIMIT * 2 > 600 ? TIME_LIMIT * 2 : 600))
  PIPE_UID=$(id -u "$PIPE_USER" 2>/dev/null || echo 0) PIPE_GID=$(id -g "$PIPE_USER" 2>/dev/null || echo 0)
  WORKER_COMMAND=$(worker_command)
  [[ $WORKER_COMMAND == *--maildir* ]] && WORKER_WRITES="$WORKER_WRITES $MAILDIR_BASE"
  [[ $LOG == /* ]] && WORKER_WRITES="$WORKER_WRITES $(dirname "$LOG")"
  render "$1"
}

# main.cf's lines on stdin; main-MODE.cf's (pull, lmtp) replace those of the same name
mode_settings() {
  if [[ ! -f $HERE/main-$MODE.cf ]]; then cat; return 0; fi
  local over keys
  over=$(render_mode "$HERE/main-$MODE.cf" | grep -Ev '^[[:space:]]*(#|$)')
  keys=$(sed -E 's/[[:space:]]*=.*//' <<<"$over" | paste -sd '|')
  grep -Ev "^($keys)[[:space:]]*=" || true
  printf '%s\n' "$over"
}

worker_mode() {
  case $MODE in
    push) ;;
    worker|pull) WORKER_SOCKET_LINE="worker_socket = \"$WORKER_SOCKET\"" ;;
    lmtp) WORKER_SOCKET_LINE="worker_socket = \"$WORKER_SOCKET\""
          LMTP_SOCKET_LINE="lmtp_socket = \"$LMTP_SOCKET\"" ;;
    *) die "MODE must be push, worker, pull or lmtp" ;;
  esac
}

# auth_method = authentication-results: bombom-deliver trusts the Authentication-Results header
# carrying AUTHSERV_ID, so that header must come only from our own milter. Postfix strips every
# incoming one (header_checks; the headers a milter adds are not subject to header_checks), and a
# milter must be there to add it, with mail deferred while it is down (docs/postfix.md).
auth_mode() {
  case $AUTH_METHOD in
    dkim) return 0 ;;
    authentication-results) ;;
    *) die "AUTH_METHOD must be dkim or authentication-results" ;;
  esac
  [[ -n $AUTHSERV_ID ]] || AUTHSERV_ID=$(pf postconf -xh myhostname)
  [[ $AUTHSERV_ID =~ ^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]] ||
    die "AUTHSERV_ID must be a host name (the milter's AuthservID), not '$AUTHSERV_ID'"
  [[ -n $(pf postconf -xh smtpd_milters) ]] || die "AUTH_METHOD=authentication-results trusts a
  milter's Authentication-Results, but smtpd_milters is empty: set up OpenDKIM (and OpenDMARC)
  with AuthservID $AUTHSERV_ID first (docs/postfix.md), or keep AUTH_METHOD=dkim"
  [[ $(pf postconf -xh milter_default_action) != accept ]] || die "milter_default_action = accept
  would let mail in unverified while the milter is down: use tempfail (Postfix's default)"
  AUTH_METHOD_LINE='auth_method = "authentication-results"'
  AUTHSERV_ID_LINE="authserv_id = \"$AUTHSERV_ID\""
}

# main.cf's lines on stdin, and in authentication-results mode header_checks: ours first, then
# whatever the operator had before the install.
auth_settings() {
  cat
  [[ $AUTH_METHOD == authentication-results ]] || return 0
  local line before=""
  line=$(grep -E '^header_checks[[:space:]]*=' "$PRIOR" 2>/dev/null | head -1) || true
  before=${line#*=}; before=${before# }
  render "$HERE/main-authentication-results.cf" | grep -Ev '^[[:space:]]*(#|$)' |
    sed -E "s#\$#${before:+, $before}#"
}

# lmtp mode's master.cf service: present in that mode only
apply_lmtp_service() {
  local entry current=""
  current=$(pf postconf -M "$LMTP_SERVICE/unix" 2>/dev/null | tr -s ' \n\t' ' ' | sed 's/ $//')
  if [[ $MODE != lmtp ]]; then
    [[ -z $current ]] && return 0
    pf postconf -MX "$LMTP_SERVICE/unix"
    say "master.cf: removed the $LMTP_SERVICE service"
    CHANGED=1
    return 0
  fi
  entry=$(render_mode "$HERE/master-lmtp.cf" | grep -Ev '^[[:space:]]*(#|$)' | tr -s ' \n\t' ' ' | sed 's/ $//')
  [[ $current == "$entry" ]] && return 0
  pf postconf -M "$LMTP_SERVICE/unix=$entry"
  say "master.cf: $LMTP_SERVICE service"
  CHANGED=1
}

# The worker's runtime directory (its sockets): the pipe user's, group postfix (lmtp(8) runs as
# postfix and must reach lmtp.sock), 0750. Made now, and by systemd-tmpfiles at boot.
install_runtime_dirs() {
  local d
  getent group postfix >/dev/null || die "no group postfix (is Postfix installed?)"
  for d in $RUNTIME_DIRS; do
    install -d -o "$PIPE_USER" -g postfix -m 0750 "$d"
  done
}

has_systemd() { [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; }

# Worker, pull and lmtp modes: the worker's unit (enabled and started; without systemd, the
# command to run), the Maildir. Push mode leaves a running worker alone. A changed unit does
# not make Postfix reload.
install_worker() {
  local before=$CHANGED unit=$SYSTEMD_DIR/bombom-worker.service changed waiting
  waiting=$(waiting_in_maildir); WAITING=$waiting
  if [[ ${EARLIER[MODE]:-} == pull && $MODE != pull ]] || { [[ $MODE != pull ]] && ((waiting > 0)); }; then
    if ((waiting > 0)); then
      say "$waiting messages wait in $MAILDIR_BASE/Maildir/new (and claimed/): the worker must"
      say "  drain them; it runs with --maildir until a later 'make install' finds new/ empty"
      [[ $MODE == push ]] && say "  (MODE=push: start or keep the worker as below; stop it once new/ is empty)"
    else
      say "$MAILDIR_BASE/Maildir/new is empty, but virtual(8) may still write what Postfix queued"
      say "  before this switch: the worker keeps --maildir until the next 'make install'"
    fi
  fi
  if [[ $MODE == push && ${EARLIER[MODE]:-} != pull ]] && ((waiting == 0)); then
    [[ -f $unit ]] && say "$unit stays; MODE=push configures no worker_socket, so it goes unused (systemctl disable --now bombom-worker.service)"
    return 0
  fi
  install_runtime_dirs
  if [[ $MODE == pull ]]; then
    install -d -o "$PIPE_USER" -g "$PIPE_USER" -m 0700 "$MAILDIR_BASE"
  fi
  install -d -m 0755 "$SYSTEMD_DIR"
  install_file "$unit" root:root 0644 < <(render_mode "$HERE/bombom-worker.service")
  changed=$((CHANGED != before)); CHANGED=$before
  if ! has_systemd; then
    say "no systemd here: run the worker as $PIPE_USER yourself, kept running (restarted when it"
    say "  exits, and started at boot after the runtime directory):"
    say "  while :; do install -d -o $PIPE_USER -g postfix -m 0750 $RUNTIME_DIRS; runuser -u $PIPE_USER -- $(worker_command); sleep 1; done"
    say "  e.g. as root in a session that outlives yours: nohup sh -c '<that loop>' >/dev/null 2>&1 &"
    say "  and at boot: @reboot root sh -c '<that loop>' in /etc/crontab"
    return 0
  fi
  install_file /etc/tmpfiles.d/bombom.conf root:root 0644 \
    < <(for d in $RUNTIME_DIRS; do echo "d $d 0750 $PIPE_USER postfix -"; done)
  ((changed)) && systemctl daemon-reload
  if ((changed)) || ! systemctl is-active -q bombom-worker.service; then
    systemctl enable -q bombom-worker.service
    systemctl restart bombom-worker.service
    say "started bombom-worker.service"
  fi
  return 0
}

uninstall_worker() {
  if has_systemd; then
    systemctl disable -q --now bombom-worker.service 2>/dev/null || true
  fi
  rm -f "$POSTFIX_CONFIG_DIR/bombom-recipients-pull.cf"
}

# Postfix's local table of members (pull mode's recipient check, answered without the
# database): rebuilt from the database when it can be asked, else kept (or made empty).
install_members_map() {
  install_blocked_maps
  if [[ -f $ADMIN_CONFIG ]] && "$VENV/bin/bombom" --config="$ADMIN_CONFIG" members map >/dev/null 2>&1; then
    return 0
  fi
  if [[ ! -f $MEMBERS_MAP.db ]]; then
    install -m 0640 -o root -g postfix /dev/null "$MEMBERS_MAP"
    pf postmap "hash:$MEMBERS_MAP"
    chown root:postfix "$MEMBERS_MAP.db"; chmod 0640 "$MEMBERS_MAP.db"
  fi
  [[ $MODE == pull ]] && say "members map: the database could not be asked; $MEMBERS_MAP kept (bombom members map rewrites it)"
  return 0
}

# Pull mode's local copies of the operator's blocklist, as for the members: from the database
# when it can be asked, else kept (or made empty: a missing table is a lookup error, 451).
install_blocked_maps() {
  if [[ -f $ADMIN_CONFIG ]] && "$VENV/bin/bombom" --config="$ADMIN_CONFIG" block map >/dev/null 2>&1; then
    return 0
  fi
  [[ -f $BLOCKED-clients ]] || install -m 0640 -o root -g postfix /dev/null "$BLOCKED-clients"
  if [[ ! -f $BLOCKED-senders.db ]]; then
    install -m 0640 -o root -g postfix /dev/null "$BLOCKED-senders"
    pf postmap "hash:$BLOCKED-senders"
    chown root:postfix "$BLOCKED-senders.db"; chmod 0640 "$BLOCKED-senders.db"
  fi
  return 0
}

# What changes against the remembered settings; a service domain dropped while mail for it is
# queued is refused (Postfix would route that mail elsewhere).
show_changes() {
  local name dropped="" d
  for name in "${REMEMBERED[@]}"; do
    [[ -n ${EARLIER[$name]+set} && ${EARLIER[$name]} != "${!name}" ]] || continue
    say "$name: '${EARLIER[$name]}' -> '${!name}' (given; was remembered in $INSTALL_ENV)"
  done
  if [[ -n ${EARLIER[DOMAINS]+set} ]]; then
    for d in ${EARLIER[DOMAINS]//,/ }; do
      grep -qix "$d" < <(tr ', ' '\n\n' <<<"$DOMAINS") || dropped="$dropped $d"
    done
    if [[ -n $dropped ]]; then
      refuse_while_queued "$dropped"
      say "mail for$dropped is no longer accepted here (smtpd refuses it: 554 relay access denied)"
    fi
  fi
}

remember_settings() {
  local name
  install -d -m 0755 "$(dirname "$INSTALL_ENV")"
  install_file "$INSTALL_ENV" root:root 0644 < <(
    echo "# bombom-pipe's installer settings (postfix-config/install.sh), one NAME=value a line."
    echo "# make install/db/uninstall read them; a variable given to make wins and is saved here."
    for name in "${REMEMBERED[@]}"; do printf '%s=%s\n' "$name" "${!name}"; done)
}

# bombom.conf, keeping an operator's hand edits: a three-way merge of the file (edited), what
# the installer last wrote (CONF_BASE) and what it writes now. Edits the installer's change does
# not touch are kept; where both changed the same lines, the installer stops and shows them.
install_config() {
  local new merged
  new=$(mktemp); merged=$(mktemp)
  render "$HERE/bombom.conf" >"$new"
  if [[ -f $CONFIG_FILE && -f $CONF_BASE ]] && ! cmp -s "$CONFIG_FILE" "$CONF_BASE"; then
    if ! diff3 -m -E -L "$CONFIG_FILE (yours)" -L "the last install" -L "this install" \
         "$CONFIG_FILE" "$CONF_BASE" "$new" >"$merged"; then
      awk '/^<<<<<<< /{on=1} on{print} /^>>>>>>> /{on=0}' "$merged" |
        sed -E 's#(://[^:/@]*):[^@]*@#\1:***@#' >&2
      rm -f "$new" "$merged"
      die "$CONFIG_FILE was edited by hand where this install changes it too (above, passwords
  masked: yours, then this install's). Make those lines what they should be (or move the file
  away to get the installer's), then run make install again: edits elsewhere are kept"
    fi
    cmp -s "$merged" "$new" || say "kept your edits to $CONFIG_FILE"
    install_file "$CONF_BASE" root:root 0600 <"$new"
    install_file "$CONFIG_FILE" "root:$PIPE_USER" 0640 <"$merged"
  else
    install_file "$CONF_BASE" root:root 0600 <"$new"
    install_file "$CONFIG_FILE" "root:$PIPE_USER" 0640 <"$new"
  fi
  rm -f "$new" "$merged"
}

cmd_install() {
  preflight
  worker_mode
  auth_mode
  show_changes
  install_venv
  if [[ -f $OLD_PASSFILE && ! -e $LOOKUP_PASSFILE ]]; then  # keep an earlier install's password
    install -d -m 0755 "$(dirname "$LOOKUP_PASSFILE")"
    mv "$OLD_PASSFILE" "$LOOKUP_PASSFILE"
  fi
  load_settings
  install_files
  if [[ -f $ADMIN_CONFIG ]]; then  # make db wrote it: the same settings (DOMAINS) in it
    install_file "$ADMIN_CONFIG" root:root 0600 < <(render "$HERE/admin.conf")
  fi
  link_command
  install_members_map
  rm -f "$POSTFIX_CONFIG_DIR/bombom-recipients-pull.cf"   # earlier pull modes' map
  install_worker
  remember_prior
  # master.cf's lmtp service exists while main.cf names its parameters (else "unused parameter")
  [[ $MODE == lmtp ]] && apply_lmtp_service
  apply_postfix
  apply_postscreen
  [[ $MODE == lmtp ]] || apply_lmtp_service
  check_and_reload
  remember_settings
  if probe_lookup; then
    :
  elif [[ ! -f $ADMIN_CONFIG ]]; then  # before `make db` there is no database yet: the next step
    say "next: make db (creates the database; it checks the recipient lookup again)"
  else
    die "the recipient lookup cannot query the database: $LOOKUP_ERROR
  (LOOKUP_DSN, pg_hba.conf, the lookup role's password); until it can, smtpd answers 451 4.3.0"
  fi
  say "done: MODE=$MODE; mail for $DOMAINS goes to bombom as $PIPE_USER"
}

# Mail for our domains (or those named in $1) still in the queue would be routed elsewhere once
# the service is gone (with the MX pointing here: a loop, then a bounce to the publisher).
refuse_while_queued() {
  local queue d domains=${1:-}
  [[ ${FORCE:-} == 1 ]] && return 0
  queue=$(pf postqueue -j 2>&1) || die "cannot read the mail queue ($queue); FORCE=1 to go on anyway"
  [[ -n $domains ]] || domains="$DOMAINS $(pf postconf -xh virtual_mailbox_domains 2>/dev/null || true)"
  for d in ${domains//,/ }; do
    grep -Fiq "@$d\"" <<<"$queue" && die "mail for $d is still queued (postqueue -p): afterwards
  Postfix would deliver it elsewhere. Let it drain first (database up, postqueue -f); or put it
  on hold (postsuper -h ALL), go on with FORCE=1, and release it (postsuper -H ALL) only
  after installing again (docs/postfix.md)"
  done
  return 0
}

cmd_uninstall() {
  [[ $(id -u) == 0 ]] || die "run as root"
  local line
  refuse_while_queued
  for line in "$SERVICE" "$LMTP_SERVICE"; do
    if pf postconf -M "$line/unix" 2>/dev/null | grep -q .; then
      pf postconf -MX "$line/unix"
      say "master.cf: removed the $line service"
    fi
  done
  put_back_master
  if [[ -f $PRIOR ]]; then
    while IFS= read -r line; do
      [[ $line == \#* || -z $line ]] && continue
      put_back "$line" || true
    done <"$PRIOR"
    rm -f "$PRIOR"
    say "main.cf: restored the settings from before the install"
  fi
  # bombom_* parameters without the service would only draw "unused parameter" warnings
  { grep -Eo "^(${SERVICE}|${LMTP_SERVICE})_[a-z_]+" "$POSTFIX_CONFIG_DIR/main.cf" || true; } | xargs -r -n1 "postconf" -c "$POSTFIX_CONFIG_DIR" -X
  rm -f "$MAP" "$OLD_PASSFILE" "$MEMBERS_MAP" "$MEMBERS_MAP.db" "$HEADER_CHECKS" \
        "$BLOCKED-clients" "$BLOCKED-senders" "$BLOCKED-senders.db"
  for line in $BLOCK_MAPS; do rm -f "$POSTFIX_CONFIG_DIR/$line"; done
  uninstall_worker
  CHANGED=1
  check_and_reload
  say "left in place: $VENV, $BIN_DIR/bombom, $CONFIG_FILE, $ADMIN_CONFIG, $LOOKUP_PASSFILE,"
  say "  $INSTALL_ENV (for a later install), $SPOOL_DIR (raw mail), user $PIPE_USER, backups *.bombom-orig"
  if (( $(waiting_in_maildir) > 0 )); then
    say "$(waiting_in_maildir) messages still wait in $MAILDIR_BASE/Maildir/new: keep the worker with --maildir running until it is empty"
  fi
}

# As the postgres OS user (the local cluster's superuser, peer authentication on its default
# socket; PGHOST/PGPORT choose another): the database, its owner role, the schema created as that
# owner, the delivery and lookup roles. Then root's admin config, and the lookup check again.
cmd_init_db() {
  [[ $(id -u) == 0 ]] || die "run as root"
  [[ -x $VENV/bin/bombom ]] || die "$VENV missing: run 'make install' first"
  [[ $DATABASE =~ ^[a-z_][a-z0-9_]*$ ]] || die "DATABASE must be a plain lower-case name"
  local conf
  load_settings
  cd /   # postgres may not read root's working directory (psql would say so)
  runuser -u postgres -- psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'" |
    grep -q 1 || runuser -u postgres -- createdb "$DATABASE"
  conf=$(mktemp /tmp/bombom-init-db.XXXXXX)
  trap 'rm -f "$conf"' RETURN
  printf 'database_url = "postgresql:///%s"\nlog = "stderr"\n' "$DATABASE" >"$conf"
  chown postgres "$conf"; chmod 0600 "$conf"
  BOMBOM_DELIVERY_PASSWORD=$DELIVERY_PASSWORD BOMBOM_LOOKUP_PASSWORD=$LOOKUP_PASSWORD \
  BOMBOM_ADMIN_PASSWORD=$ADMIN_PASSWORD runuser -u postgres -- \
    env BOMBOM_CONFIG="$conf" "$VENV/bin/bombom" init-db --owner "$ADMIN_ROLE" \
      --delivery-role "$DELIVERY_ROLE" --lookup-role "$LOOKUP_ROLE"
  install -d -m 0755 "$(dirname "$ADMIN_CONFIG")"
  install_file "$ADMIN_CONFIG" root:root 0600 < <(render "$HERE/admin.conf")
  [[ -f $MEMBERS_MAP ]] && "$VENV/bin/bombom" --config="$ADMIN_CONFIG" members map >/dev/null
  [[ -f $BLOCKED-senders ]] && "$VENV/bin/bombom" --config="$ADMIN_CONFIG" block map >/dev/null
  probe_lookup || die "the recipient lookup cannot query the database: $LOOKUP_ERROR
  (LOOKUP_DSN, pg_hba.conf; run 'make install' again if the lookup password changed)"
}

case ${1:-} in
  install) cmd_install ;;
  uninstall) cmd_uninstall ;;
  init-db) cmd_init_db ;;
  *) echo "usage: $0 install|uninstall|init-db (settings in the environment or $INSTALL_ENV; see the top of this file)" >&2; exit 2 ;;
esac
