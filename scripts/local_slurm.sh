#!/usr/bin/env bash
# Bring up / take down a real one-node SLURM cluster (with accounting) on
# localhost, so the tests can drive the real snakemake-executor-plugin-slurm
# through real sbatch/squeue/sacct instead of mocks.
#
#   scripts/local_slurm.sh up [STATE_DIR]     install if needed, start, wait for idle
#   scripts/local_slurm.sh down [STATE_DIR]   stop every daemon by its pid file
#   scripts/local_slurm.sh status             exit 0 iff sinfo and sacct answer
#   scripts/local_slurm.sh can-run            exit 0 iff this machine can host it, else why
#
# It only ever rewrites, restarts or stops a cluster it set up itself: `up`
# writes the marker /etc/slurm/digi2real-local-cluster (what it installed and
# configured) before it changes anything. Where SLURM or munge is installed or
# running without that marker, every command refuses and changes nothing.
# Exit codes: 0 ok; 1 failed, or cannot run here (can-run: not root, no apt);
# 2 usage; 3 refused: a SLURM installation this script did not set up.
#
# Made for Debian 12 (Slurm 22.05, MariaDB 10.11) as root without systemd
# (containers, CI VMs): apt does not start services there, so every daemon is
# started by hand and stopped by the PID in its pid file. See
# scripts/README-local-slurm.md and /work/shared/SLURM.md for the background.
set -euo pipefail

readonly DEFAULT_STATE_DIR=/tmp/digi2real-slurm
readonly PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
# Binaries that must exist for the cluster to be started without installing.
readonly BINARIES=(slurmctld slurmd sbatch sacct sacctmgr sinfo munged
	slurmdbd mariadbd mariadb-install-db mariadb mariadb-admin)
# Only for testing the ownership check: look for an installation under this
# directory instead of /. Every command stops after that check when it is set.
readonly ROOT="${D2R_SLURM_ROOT:-}"
readonly CONF_DIR=$ROOT/etc/slurm # where Debian's Slurm looks for its config
readonly MUNGE_KEY=$ROOT/etc/munge/munge.key
# Present iff this script set up the SLURM installation here (see classify).
readonly MARKER=$CONF_DIR/digi2real-local-cluster
readonly EXIT_REFUSED=3
readonly CLUSTER_NAME=digi2real
readonly ACCOUNT_NAME=digi2real
readonly PARTITION_NAME=debug
# A non-default port, so an unrelated MariaDB on 3306 cannot collide with ours.
readonly DB_PORT="${D2R_SLURM_DB_PORT:-33306}"
# The DB only listens on 127.0.0.1 and only holds throwaway accounting data,
# so a fixed password is good enough and keeps `up` re-runnable.
readonly DB_PASS=slurm-local-only
readonly IDLE_TIMEOUT="${D2R_SLURM_IDLE_TIMEOUT:-90}"
# How long each apt-get call waits for apt's and dpkg's locks while another
# apt/dpkg holds them (unattended-upgrades, a second install) before `up` gives
# up. Two calls (update, install) stay well under the 600 s tests/test_slurm.py
# allows `up`.
readonly APT_LOCK_TIMEOUT="${D2R_SLURM_APT_LOCK_TIMEOUT:-240}"

log() { printf '[local_slurm] %s\n' "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

usage() {
	awk 'NR > 1 && /^# Made for/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'
}

have_all_binaries() {
	local b
	for b in "${BINARIES[@]}"; do
		# Daemons live in /usr/sbin, which may not be on a non-login PATH.
		command -v "$b" >/dev/null 2>&1 || [[ -x /usr/sbin/$b ]] || return 1
	done
}

# Prints the reason and returns 1 when this machine cannot host the cluster.
can_run() {
	if [[ $(id -u) -ne 0 ]]; then
		echo "local SLURM cluster needs root (daemons, /etc/slurm, /run/munge); running as $(id -un)"
		return 1
	fi
	if ! have_all_binaries && ! command -v apt-get >/dev/null 2>&1; then
		echo "SLURM/munge/MariaDB binaries missing and no apt-get to install them"
		return 1
	fi
	if ! hostname -s >/dev/null 2>&1; then
		echo "'hostname -s' fails; Slurm needs a node name"
		return 1
	fi
	return 0
}

missing_packages() { # prints those of PACKAGES that are not installed, one a line
	local p
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
			echo "$p"
	done
}

install_packages() { # packages...
	local missing=("$@") p
	((${#missing[@]} == 0)) && return 0
	log "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# Only refresh the package lists when apt cannot see a candidate for a
	# missing package (fresh image without lists): update is the slow part.
	# Not `grep -q`: it stops reading at the match, apt-cache (which writes
	# line by line) then dies of SIGPIPE, and with pipefail the check fails
	# and runs the update for nothing (17 times in 20 on Debian 12).
	for p in "${missing[@]}"; do
		if ! apt-cache policy "$p" 2>/dev/null | grep 'Candidate: [0-9]' >/dev/null; then
			log "apt-get update (no candidate for $p)"
			apt_get update -qq
			break
		fi
	done
	apt_get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Sets APT_BUSY_LOCK to the lock apt-get failed to get, as its stderr (the file)
# says, and APT_BUSY_HOLDER to "process N (name)" where it names the holder;
# both empty when it failed for another reason. apt 2.6 says, depending on the
# lock and on -qq:
#   E: Could not get lock /var/lib/apt/lists/lock. It is held by process 42 (apt-get)
#   E: Could not get lock /var/lib/dpkg/lock-frontend - open (11: Resource temporarily unavailable)
#   E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another process using it?
#   E: Unable to lock the administration directory (/var/lib/dpkg/), is another process using it?
# ("Could not open lock file ..., are you root?" is no busy lock: not matched.)
APT_BUSY_LOCK="" APT_BUSY_HOLDER=""
read_apt_lock_error() { # apt-get's stderr file
	local line
	local get='Could not get lock ([^ ]*[^. ])(\. It is held by (process .*))?'
	local frontend='Unable to acquire the dpkg frontend lock \((.*)\), is another process'
	local admin='Unable to lock the administration directory \((.*)\), is another process'
	APT_BUSY_LOCK="" APT_BUSY_HOLDER=""
	while IFS= read -r line; do
		if [[ $line =~ $get ]]; then
			APT_BUSY_LOCK=${BASH_REMATCH[1]} APT_BUSY_HOLDER=${BASH_REMATCH[3]}
		elif [[ -z $APT_BUSY_LOCK && $line =~ $frontend ]]; then
			APT_BUSY_LOCK=${BASH_REMATCH[1]}
		elif [[ -z $APT_BUSY_LOCK && $line =~ $admin ]]; then
			APT_BUSY_LOCK=${BASH_REMATCH[1]%/}/lock
		fi
	done <"$1"
}

# apt-get "$@", waiting up to APT_LOCK_TIMEOUT seconds for apt's and dpkg's
# locks instead of failing at once (exit 100, "Could not get lock") while
# another apt or dpkg holds one. apt-get waits for the dpkg locks
# (/var/lib/dpkg/lock-frontend, lock) itself, with DPkg::Lock::Timeout. apt
# 2.6 has no such option for the others: /var/lib/apt/lists/lock (update) and
# /var/cache/apt/archives/lock (install) make it fail at once, so a call that
# failed on a busy lock runs again, every second, until the time is up. Then
# it dies with one line naming the lock and how long it waited. Any other
# failure returns apt-get's exit status, its stderr shown.
apt_get() { # apt-get arguments...
	local start=$SECONDS err rc waited lock_timeout=0 waiting_for="" holder=""
	[[ $APT_LOCK_TIMEOUT =~ ^[0-9]+$ ]] ||
		die "D2R_SLURM_APT_LOCK_TIMEOUT must be a number of seconds, not '$APT_LOCK_TIMEOUT'"
	err=$(mktemp)
	while :; do
		rc=0
		# LC_ALL=C: the messages read above are the English ones.
		LC_ALL=C apt-get -o DPkg::Lock::Timeout="$lock_timeout" "$@" 2>"$err" || rc=$?
		APT_BUSY_LOCK=""
		((rc == 0)) || read_apt_lock_error "$err"
		if [[ -z $APT_BUSY_LOCK ]]; then # done, or failed for another reason
			cat "$err" >&2
			rm -f "$err"
			[[ -z $waiting_for ]] || log "apt-get $1: waited $((SECONDS - start))s for apt's locks"
			return "$rc"
		fi
		# Once its own wait has timed out, apt (-qq) no longer names the
		# holder: keep the one it named before, for the same lock.
		if [[ -n $APT_BUSY_HOLDER ]]; then
			holder=$APT_BUSY_HOLDER
		elif [[ $APT_BUSY_LOCK != "$waiting_for" ]]; then
			holder=""
		fi
		waited=$((SECONDS - start))
		if ((waited >= APT_LOCK_TIMEOUT)); then
			rm -f "$err"
			die "apt-get $1: $APT_BUSY_LOCK still locked after waiting ${waited}s${holder:+ (held by $holder)}; another apt or dpkg is running (set D2R_SLURM_APT_LOCK_TIMEOUT to wait longer than ${APT_LOCK_TIMEOUT}s)"
		fi
		if [[ $APT_BUSY_LOCK != "$waiting_for" ]]; then
			log "apt-get $1: $APT_BUSY_LOCK is locked${holder:+ by $holder}; waiting up to ${APT_LOCK_TIMEOUT}s"
			waiting_for=$APT_BUSY_LOCK
		fi
		sleep 1
		lock_timeout=$((APT_LOCK_TIMEOUT - (SECONDS - start)))
		((lock_timeout > 0)) || lock_timeout=1
	done
}

# --- pid-file helpers ----------------------------------------------------------

pid_alive() { # pidfile -> 0 when the process it names exists
	local pid
	[[ -s $1 ]] || return 1
	pid=$(<"$1")
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

wait_until() { # timeout_s description command... -> polls every 0.2 s
	local timeout=$1 what=$2 start
	shift 2
	start=$SECONDS
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS - start >= timeout)); then
			log "timed out after ${timeout}s waiting for $what"
			return 1
		fi
		sleep 0.2
	done
}

# Sends TERM to the pids in the given pid files together, waits up to 30 s for
# all of them to exit, then KILLs what is left. Together, not one by one: each
# daemon takes 1-3 s to shut down.
stop_by_pidfiles() { # name=pidfile...
	local arg name pidfile pid pids=() deadline
	for arg in "$@"; do
		name=${arg%%=*} pidfile=${arg#*=}
		if pid_alive "$pidfile"; then
			pid=$(<"$pidfile")
			log "stopping $name (pid $pid)"
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
		fi
		rm -f "$pidfile"
	done
	deadline=$((SECONDS + 30))
	for pid in "${pids[@]}"; do
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
			sleep 0.2
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "pid $pid did not exit 30 s after TERM; sending KILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
}

# --- paths -----------------------------------------------------------------------

set_paths() {
	STATE_DIR=$(realpath -m "${1:-$DEFAULT_STATE_DIR}")
	LOG_DIR=$STATE_DIR/log
	RUN_DIR=$STATE_DIR/run
	MUNGE_DIR=$STATE_DIR/munge # owned by munge: its pid and log files
	DB_DIR=$STATE_DIR/mysql    # owned by mysql: MariaDB datadir, socket, pid
	DB_SOCK=$DB_DIR/mysqld.sock
	DB_PID=$DB_DIR/mysqld.pid
	MUNGE_PID=$MUNGE_DIR/munged.pid
	DBD_PID=$RUN_DIR/slurmdbd.pid
	CTLD_PID=$RUN_DIR/slurmctld.pid
	SLURMD_PID=$RUN_DIR/slurmd.pid
}

tail_logs() {
	local f
	for f in "$LOG_DIR"/*.log "$LOG_DIR"/*.stdout "$MUNGE_DIR"/munged.log \
		"$DB_DIR"/mariadb.log; do
		# Skip empty files and the chatty install log (shown if install fails).
		[[ -s $f && $f != */mariadb-install.log ]] || continue
		printf '\n===== tail %s =====\n' "$f" >&2
		tail -n 25 "$f" >&2
	done
}

# --- config ----------------------------------------------------------------------

# The CPUs this machine lets us use. Not plain nproc: it answers OMP_NUM_THREADS and
# OMP_THREAD_LIMIT when set (coreutils does), and a node configured with fewer CPUs than a job
# asks for leaves that job pending for good (seen: a suite run at OMP_NUM_THREADS=1 made a
# 1-CPU node, and its 2-thread generation jobs never started).
node_cpus() {
	env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc
}

write_configs() {
	local host cpus mem_mb
	host=$(hostname -s)
	cpus=$(node_cpus)
	mem_mb=$(free -m | awk '/^Mem:/ { print $2 }')
	# Leave a little headroom: slurmd derives RealMemory from /proc/meminfo
	# itself, and a node configured with more memory than slurmd finds is
	# drained ("Low RealMemory").
	mem_mb=$((mem_mb * 95 / 100))
	mkdir -p "$CONF_DIR"

	# Written to a temp file and only moved over when it changed, so an `up`
	# on a running cluster with the same settings does not touch anything.
	local tmp
	tmp=$(mktemp)
	cat >"$tmp" <<EOF
# Generated by scripts/local_slurm.sh: a one-node test cluster. Edits are lost.
ClusterName=$CLUSTER_NAME
SlurmctldHost=$host(127.0.0.1)
# root runs everything: a test cluster with its state under $STATE_DIR.
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
# No mail here; the default (/bin/mail) is missing and slurmctld logs an error.
MailProg=/bin/true
# No cgroups in containers: track processes by walking /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
ReturnToService=2
# Use the node line below even if slurmd sees other hardware (containers,
# cgroup-limited CPUs): otherwise a mismatch drains the node.
SlurmdParameters=config_overrides
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job gets the whole node's memory and jobs run one by one.
DefMemPerCPU=1024
# Keep finished jobs visible to squeue for a while (plugin fallback, debugging).
MinJobAge=300
# Short grace between SIGTERM and SIGKILL on scancel/timeout: tests stay quick.
KillWait=5
InactiveLimit=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:1 State=UNKNOWN
PartitionName=$PARTITION_NAME Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
	install_if_changed "$tmp" "$CONF_DIR/slurm.conf" 644

	tmp=$(mktemp)
	cat >"$tmp" <<EOF
# Generated by scripts/local_slurm.sh. A pretend GPU: Slurm schedules it and
# sets CUDA_VISIBLE_DEVICES=0, but there is no device behind it.
AutoDetect=off
Name=gpu File=/dev/null
EOF
	install_if_changed "$tmp" "$CONF_DIR/gres.conf" 644

	tmp=$(mktemp)
	cat >"$tmp" <<EOF
# Generated by scripts/local_slurm.sh.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$DBD_PID
LogFile=$LOG_DIR/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
# 127.0.0.1, not localhost: "localhost" makes the MySQL client use the default
# unix socket (/run/mysqld), not ours.
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
	# slurmdbd refuses a slurmdbd.conf readable by others (it holds a password).
	install_if_changed "$tmp" "$CONF_DIR/slurmdbd.conf" 600
}

CONFIG_CHANGED=0
install_if_changed() { # tmpfile dest mode
	if [[ -f $2 ]] && cmp -s "$1" "$2"; then
		rm -f "$1"
	else
		install -m "$3" -o root -g root "$1" "$2"
		rm -f "$1"
		CONFIG_CHANGED=1
	fi
}

# --- daemons -------------------------------------------------------------------------

start_munge() {
	pid_alive "$MUNGE_PID" && return 0
	# Debian's postinst normally creates the key; images built without it
	# (or with it wiped) need one, owned by munge and private.
	if [[ ! -s $MUNGE_KEY ]]; then
		log "creating $MUNGE_KEY"
		if command -v mungekey >/dev/null 2>&1; then
			mungekey --create --keyfile="$MUNGE_KEY" --force
		else
			dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
		fi
	fi
	chown munge:munge "$MUNGE_KEY"
	chmod 400 "$MUNGE_KEY"
	# /run is a tmpfs on most machines: the socket dir is gone after a reboot,
	# and munged refuses a socket dir it does not own.
	install -d -m 755 -o munge -g munge /run/munge
	install -d -m 700 -o munge -g munge "$MUNGE_DIR"
	# munged refuses to run as root; it daemonizes itself.
	runuser -u munge -- /usr/sbin/munged \
		--pid-file="$MUNGE_PID" --log-file="$MUNGE_DIR/munged.log" \
		</dev/null >>"$LOG_DIR/munged.stdout" 2>&1
	wait_until 10 "munged" munge -n ||
		{
			tail_logs
			die "munged did not come up"
		}
}

start_mariadb() {
	pid_alive "$DB_PID" && return 0
	install -d -m 755 -o mysql -g mysql "$DB_DIR"
	if [[ ! -d $DB_DIR/mysql ]]; then
		log "initialising MariaDB datadir $DB_DIR"
		# --no-defaults: ignore Debian's /etc/mysql config (datadir, socket,
		# port), so this instance cannot clash with a system MariaDB.
		mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DIR" \
			--skip-test-db >"$LOG_DIR/mariadb-install.log" 2>&1 ||
			{
				tail -n 30 "$LOG_DIR/mariadb-install.log" >&2
				die "mariadb-install-db failed"
			}
	fi
	# mariadbd does not daemonize: detach it, with every stdio stream
	# redirected so a caller reading our stdout (subprocess pipes) does not
	# wait for it. The error log goes into the mysql-owned datadir: mariadbd
	# opens it after dropping to user mysql, which cannot write $LOG_DIR.
	# Lock wait timeout as slurmdbd recommends (it also warns about the
	# buffer pool size, wanting GiBs; harmless here).
	setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DB_DIR" \
		--socket="$DB_SOCK" --pid-file="$DB_PID" \
		--bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
		--innodb-lock-wait-timeout=900 --log-error="$DB_DIR/mariadb.log" \
		</dev/null >>"$LOG_DIR/mariadb.stdout" 2>&1 &
	wait_until 60 "MariaDB" mariadb-admin --no-defaults -S "$DB_SOCK" -u root ping ||
		{
			tail_logs
			die "MariaDB did not come up"
		}
	# root@localhost authenticates by unix socket as OS root. Both hosts:
	# with --skip-name-resolve a TCP client from 127.0.0.1 matches only the IP.
	mariadb --no-defaults -S "$DB_SOCK" -u root <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
EOF
}

start_slurmdbd() {
	pid_alive "$DBD_PID" && return 0
	/usr/sbin/slurmdbd </dev/null >>"$LOG_DIR/slurmdbd.stdout" 2>&1
	# The first start creates the accounting tables: give it time.
	wait_until 60 "slurmdbd" sacctmgr -n list cluster ||
		{
			tail_logs
			die "slurmdbd did not come up"
		}
}

add_associations() {
	# `sacctmgr add` fails when the entity exists; look first so re-runs are clean.
	if [[ -z $(sacctmgr -n -P list cluster "$CLUSTER_NAME" format=cluster) ]]; then
		sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null
	fi
	if [[ -z $(sacctmgr -n -P list account "$ACCOUNT_NAME" format=account) ]]; then
		sacctmgr -i add account "$ACCOUNT_NAME" cluster="$CLUSTER_NAME" \
			description="digi2real tests" organization=digi2real >/dev/null
	fi
	local u
	for u in root ${SUDO_USER:+"$SUDO_USER"}; do
		if [[ -z $(sacctmgr -n -P list assoc user="$u" account="$ACCOUNT_NAME" \
			cluster="$CLUSTER_NAME" format=user) ]]; then
			sacctmgr -i add user "$u" account="$ACCOUNT_NAME" \
				defaultaccount="$ACCOUNT_NAME" cluster="$CLUSTER_NAME" >/dev/null
		fi
	done
}

start_slurm() {
	# A changed slurm.conf/gres.conf only takes effect after a restart.
	if ((CONFIG_CHANGED)); then
		stop_by_pidfiles slurmd="$SLURMD_PID" slurmctld="$CTLD_PID"
	fi
	if ! pid_alive "$CTLD_PID"; then
		# -c: a controller that is not running was stopped without `down` (killed,
		# or the machine or session ended). The jobs it saved have no snakemake
		# waiting for them any more; recovered, one holds the node until its time
		# limit and `up` times out waiting for an idle node (seen in CI).
		/usr/sbin/slurmctld -c </dev/null >>"$LOG_DIR/slurmctld.stdout" 2>&1
	fi
	if ! pid_alive "$SLURMD_PID"; then
		/usr/sbin/slurmd </dev/null >>"$LOG_DIR/slurmd.stdout" 2>&1
	fi
}

node_idle() {
	local states
	states=$(timeout 10 sinfo -h -o %t 2>/dev/null) || return 1
	[[ $states == idle ]]
}

conf_value() { # file key -> value of key=value in a Slurm config file
	[[ -r $1 ]] && sed -n "s/^$2=//p" "$1" | tail -n 1
}

cluster_answers() {
	local state pidfile
	# Fail fast when the daemons are not running: sinfo alone retries for ~9 s
	# against a dead slurmctld. Their pid files are named in the configs.
	for pidfile in "$(conf_value "$CONF_DIR/slurm.conf" SlurmctldPidFile)" \
		"$(conf_value "$CONF_DIR/slurmdbd.conf" PidFile)"; do
		[[ -n $pidfile ]] && pid_alive "$pidfile" || return 1
	done
	state=$(timeout 15 sinfo -h -o %t 2>/dev/null) || return 1
	[[ $state =~ ^(idle|mix|mixed|alloc|allocated)$ ]] || return 1
	timeout 15 sacct -n -X -S now-1minutes >/dev/null 2>&1
}

# --- ownership -------------------------------------------------------------------------
#
# The script rewrites, restarts and stops only a SLURM installation it set up
# itself. classify sets OWNER to one of
#   marked   MARKER is there: ours (or handed over by hand); reuse it.
#   clean    no trace of SLURM or munge: ours to install (MARKER first).
#   legacy   no MARKER, but every Slurm config file here is one an earlier
#            version of this script generated (its first line says so) and
#            every Slurm/munge daemon running is the one named in that
#            cluster's pid files: ours from before markers existed; `up`
#            marks it.
#   foreign  anything else: someone else's installation. Refused, untouched.
# and TRACES to what it found (one a line).

readonly GENERATED_HEADER='# Generated by scripts/local_slurm.sh'
readonly OUR_CONFIGS=(slurm.conf gres.conf slurmdbd.conf)
readonly OTHER_CONFIGS=(cgroup.conf topology.conf acct_gather.conf job_container.conf
	oci.conf helpers.conf mpi.conf knl.conf)
readonly DAEMONS=(slurmctld slurmd slurmdbd munged)

pids_named() { # name -> pids of the processes whose command name is exactly name
	local f comm
	for f in /proc/[0-9]*/comm; do
		{ read -r comm <"$f"; } 2>/dev/null || continue
		if [[ $comm == "$1" ]]; then
			f=${f#/proc/}
			echo "${f%/comm}"
		fi
	done
}

installation_traces() { # one line per trace of a SLURM or munge installation
	local f b d pid seen=" "
	for f in "${OUR_CONFIGS[@]}" "${OTHER_CONFIGS[@]}"; do
		[[ -e $CONF_DIR/$f ]] && echo "config $CONF_DIR/$f"
	done
	[[ -e $MUNGE_KEY ]] && echo "munge key $MUNGE_KEY"
	for b in slurmctld slurmd slurmdbd sinfo sbatch munged; do
		for d in /usr/sbin /usr/bin /usr/local/sbin /usr/local/bin; do
			[[ -x $ROOT$d/$b ]] || continue
			f=$(realpath -m "$ROOT$d/$b") # a program under two names: listed once
			[[ $seen == *" $f "* ]] || echo "program $ROOT$d/$b"
			seen+="$f "
		done
	done
	for b in "${DAEMONS[@]}"; do
		for pid in $(pids_named "$b"); do
			echo "$b running (pid $pid)"
		done
	done
	return 0
}

pid_in() { # pidfile -> its pid, or nothing
	[[ -n $1 && -s $1 ]] && tr -dc 0-9 <"$1"
	return 0
}

# 0 when the only Slurm configs here are ours (slurm.conf among them), each
# with the first line this script writes, and every Slurm/munge daemon running
# is the one named in those configs' pid files.
is_legacy_install() {
	local f state expected name pid
	[[ -f $CONF_DIR/slurm.conf ]] || return 1
	for f in "${OTHER_CONFIGS[@]}"; do
		[[ ! -e $CONF_DIR/$f ]] || return 1
	done
	for f in "${OUR_CONFIGS[@]}"; do
		[[ -e $CONF_DIR/$f ]] || continue
		[[ $(head -n 1 "$CONF_DIR/$f") == "$GENERATED_HEADER"* ]] || return 1
	done
	state=$(conf_value "$CONF_DIR/slurm.conf" StateSaveLocation || true)
	state=${state%/slurmctld}
	expected=" slurmctld=$(pid_in "$(conf_value "$CONF_DIR/slurm.conf" SlurmctldPidFile || true)")"
	expected+=" slurmd=$(pid_in "$(conf_value "$CONF_DIR/slurm.conf" SlurmdPidFile || true)")"
	expected+=" slurmdbd=$(pid_in "$(conf_value "$CONF_DIR/slurmdbd.conf" PidFile || true)")"
	expected+=" munged=$(pid_in "${state:+$state/munge/munged.pid}") "
	for name in "${DAEMONS[@]}"; do
		for pid in $(pids_named "$name"); do
			[[ $expected == *" $name=$pid "* ]] || return 1
		done
	done
	return 0
}

OWNER="" TRACES=""
classify() {
	TRACES=$(installation_traces)
	if [[ -e $MARKER ]]; then
		OWNER=marked
	elif [[ -z $TRACES ]]; then
		OWNER=clean
	elif is_legacy_install; then
		OWNER=legacy
	else
		OWNER=foreign
	fi
}

refusal() { # why a foreign installation is left alone, on one line
	local found
	found=$(paste -sd ';' <<<"$TRACES" | sed 's/;/; /g')
	echo "SLURM or munge is installed here, but not by scripts/local_slurm.sh:" \
		"there is no $MARKER. Found: $found." \
		"Nothing was changed: the script never rewrites the Slurm configs, the munge key," \
		"the accounting database or the daemons of an installation it did not set up." \
		"Use a machine without SLURM or, if this installation is yours and disposable," \
		"hand it over by creating that file."
}

# Exits 3 unless the installation here is ours, or there is none.
require_ours() {
	classify
	if [[ $OWNER == foreign ]]; then
		log "REFUSED: $(refusal)"
		exit "$EXIT_REFUSED"
	fi
	if [[ -n $ROOT ]]; then
		log "D2R_SLURM_ROOT=$ROOT: the installation there is '$OWNER'; stopping here (testing only)"
		exit 0
	fi
}

marker_value() { # key -> its value in MARKER
	[[ -r $MARKER ]] && sed -n "s/^$1=//p" "$MARKER" | tail -n 1
	return 0
}

# Writes MARKER: that this script set up the installation here, and what it
# installed and configured. `up` calls it before it changes anything, so that
# an `up` failing half-way leaves an installation the next `up` knows as its own.
write_marker() { # packages about to be installed...
	local origin first packages p tmp
	origin=$(marker_value origin)
	first=$(marker_value first_set_up)
	packages=$(marker_value packages_installed)
	case $OWNER in
	clean) origin=installed ;;
	legacy) origin="adopted: configs generated by a local_slurm.sh from before this marker" ;;
	*) [[ -n $origin ]] || origin="handed over: marker created by hand" ;;
	esac
	[[ -n $first ]] || first=$(date -Iseconds)
	if [[ $OWNER == legacy && -z $packages ]]; then
		packages="(unknown: installed before this marker)"
	fi
	for p in "$@"; do
		[[ " $packages " == *" $p "* ]] || packages="${packages:+$packages }$p"
	done
	mkdir -p "$CONF_DIR"
	tmp=$(mktemp "$CONF_DIR/.digi2real-local-cluster.XXXXXX")
	cat >"$tmp" <<MARKER_TEXT
# This SLURM installation was set up by digi2real's scripts/local_slurm.sh:
# a one-node test cluster. While this file exists, that script (and the
# tests) may rewrite its configs, restart it and stop it. Where SLURM or munge
# is installed without this file, the script refuses to touch it (exit 3).
origin=$origin
first_set_up=$first
state_dir=$STATE_DIR
packages_installed=$packages
configs=${OUR_CONFIGS[*]/#/$CONF_DIR/}
munge_key=$MUNGE_KEY
database=MariaDB, datadir $STATE_DIR/mysql, 127.0.0.1:$DB_PORT, database slurm_acct_db
MARKER_TEXT
	chmod 644 "$tmp"
	if [[ -f $MARKER ]] && cmp -s "$tmp" "$MARKER"; then
		rm -f "$tmp"
	else
		mv -f "$tmp" "$MARKER"
		[[ $OWNER == marked ]] || log "marked as set up by this script: $MARKER ($origin)"
	fi
}

cmd_can_run() {
	local reason
	reason=$(can_run) || {
		echo "$reason"
		return 1
	}
	classify
	case $OWNER in
	foreign)
		refusal
		return "$EXIT_REFUSED"
		;;
	marked) log "$MARKER is here: up reuses that cluster" ;;
	legacy) log "a cluster from an earlier local_slurm.sh is here: up marks and reuses it" ;;
	clean) log "no SLURM here: up installs it" ;;
	esac
}

cmd_up() {
	set_paths "${1:-}"
	local reason t_all t0 t_install t_start
	reason=$(can_run) || die "$reason"
	t_all=$(now)
	t0=$t_all
	require_ours # exit 3 where SLURM is installed without our marker
	# A cluster running from another STATE_DIR would clash (munge socket,
	# ports) with a second one; refuse instead of half-starting.
	local running_state
	running_state=$(conf_value "$CONF_DIR/slurm.conf" StateSaveLocation || true)
	running_state=${running_state%/slurmctld}
	if [[ -n $running_state && $running_state != "$STATE_DIR" ]] &&
		pid_alive "$(conf_value "$CONF_DIR/slurm.conf" SlurmctldPidFile || true)"; then
		die "a cluster is running with state in $running_state; run '$0 down $running_state' first"
	fi
	local missing
	mapfile -t missing < <(missing_packages)
	write_marker "${missing[@]}" # before anything is installed or written
	install_packages "${missing[@]}"
	t_install=$(elapsed "$t0")
	t0=$(now)
	install -d -m 755 "$STATE_DIR" "$LOG_DIR" "$RUN_DIR" \
		"$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"
	write_configs
	if ((!CONFIG_CHANGED)) && cluster_answers; then
		log "already up (checked in $(elapsed "$t_all")s; state in $STATE_DIR)"
		return 0
	fi
	start_munge
	start_mariadb
	start_slurmdbd
	add_associations
	start_slurm
	if ! wait_until "$IDLE_TIMEOUT" "node to be idle (sinfo -h -o %t)" node_idle; then
		log "sinfo says: $(sinfo -h -o '%t %E' 2>&1 || true)"
		tail_logs
		die "SLURM node not idle after ${IDLE_TIMEOUT}s"
	fi
	t_start=$(elapsed "$t0")
	log "up in $(elapsed "$t_all")s (install ${t_install}s, start ${t_start}s); state in $STATE_DIR, partition $PARTITION_NAME, account $ACCOUNT_NAME"
}

cmd_down() {
	set_paths "${1:-}"
	require_ours # exit 3 where SLURM is installed without our marker
	# Jobs' slurmstepd processes outlive slurmd: cancel jobs first so nothing
	# of the cluster is left running, but never wait long on a sick cluster.
	if pid_alive "$CTLD_PID" && timeout 10 squeue -h -o %i >/dev/null 2>&1; then
		local jobs
		jobs=$(timeout 10 squeue -h -o %i 2>/dev/null || true)
		if [[ -n $jobs ]]; then
			log "cancelling jobs: $(echo "$jobs" | tr '\n' ' ')"
			# shellcheck disable=SC2086 # one job id per word
			timeout 10 scancel $jobs || true
			wait_until 30 "jobs to end" jobs_gone || true
		fi
	fi
	# In dependency order: slurmctld reports to slurmdbd while shutting down,
	# slurmdbd needs MariaDB, and all Slurm daemons authenticate with munge.
	stop_by_pidfiles slurmd="$SLURMD_PID" slurmctld="$CTLD_PID"
	stop_by_pidfiles slurmdbd="$DBD_PID"
	stop_by_pidfiles mariadb="$DB_PID" munged="$MUNGE_PID"
	log "down"
}

jobs_gone() {
	[[ -z $(timeout 10 squeue -h -t PD,R,CG,S -o %i 2>/dev/null) ]]
}

main() {
	local cmd=${1:-}
	shift || true
	# The daemons and sacctmgr live in /usr/sbin; add it for non-login shells.
	case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin ;; esac
	case $cmd in
	up) cmd_up "$@" ;;
	down) cmd_down "$@" ;;
	status)
		require_ours
		cluster_answers
		;;
	can-run) cmd_can_run ;;
	-h | --help | help) usage ;;
	*)
		usage >&2
		exit 2
		;;
	esac
}

main "$@"
