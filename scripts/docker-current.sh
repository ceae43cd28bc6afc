#!/usr/bin/env bash
# docker-current.sh — a current Docker Engine beside the system's, for the
# second test pass (make test-docker-current). Run as root on Debian.
#
#   scripts/docker-current.sh [start]   start it unless it runs; print its DOCKER_HOST
#                                       (RTM_DOCKER_CURRENT_IMAGE_STORE=containerd: with
#                                       the containerd image store; a running daemon with
#                                       the other store is restarted)
#   scripts/docker-current.sh stop      stop dockerd and containerd (data kept)
#   scripts/docker-current.sh purge     stop, then delete its data, packages and namespace
#   scripts/docker-current.sh status    print its version, or exit 1 when it does not answer
#
# RTM_DOCKER_CURRENT_{DIR,RUN,SOCK,NETNS,SUITE,MIRROR} override the defaults
# below.
#
# It fetches Debian trixie's docker.io, containerd and tini packages
# (Docker 26.1, API 1.45; containerd 1.7) with apt-get download against a
# private apt state — the system's apt sources, lists, status and cache
# are not touched; only the mirror host is read from the system's
# sources — and unpacks them with dpkg-deb -x under $DIR, keeping
# the .debs so that a later run does not download again. runc comes from
# the system (trixie's needs a newer glibc than bookworm's): it is the
# runtime the system's docker.io runs too.
#
# containerd and dockerd run with their own data root, exec root, pid
# files, sockets and configuration, inside a network namespace of their
# own ($NETNS). The namespace is what keeps the two daemons apart on the
# network side: a dockerd flushes and rebuilds the DOCKER iptables chains
# when it starts (and would wipe the system daemon's rules at each start of
# this one), a dockerd given --bridge=none or --default-address-pool
# deletes docker0, and two daemons on one network stack allocate
# user-defined subnets from the same pools. In its own namespace this
# dockerd keeps Docker's defaults, as production runs it: its own docker0,
# iptables rules and address pools. Its API socket is a path on the file
# system, reachable from every network namespace. The script checks that
# the system's docker0 is unchanged after the start.
#
# Tests that restart this dockerd (internal/testutil/dockerd) find it by
# its socket and start it again with the same command line, environment
# and network namespace; containerd is a separate process and stays up.
set -euo pipefail

DIR=${RTM_DOCKER_CURRENT_DIR:-/opt/rtm-docker-current}
RUN=${RTM_DOCKER_CURRENT_RUN:-/run/rtm-docker-current}
SOCK=${RTM_DOCKER_CURRENT_SOCK:-/run/rtm-docker-current.sock}
NETNS=${RTM_DOCKER_CURRENT_NETNS:-rtm-docker-current}
SUITE=${RTM_DOCKER_CURRENT_SUITE:-trixie}
# graphdriver (Docker 26's default: overlay2) or containerd (the containerd
# image store: opt-in in 26.1, the default of fresh installs in later
# releases).
IMAGE_STORE=${RTM_DOCKER_CURRENT_IMAGE_STORE:-graphdriver}
PACKAGES=(docker.io containerd tini)

say() { printf 'docker-current: %s\n' "$*" >&2; }
die() {
	say "$*"
	exit 1
}

ROOT=$DIR/root
DEBS=$DIR/debs
APT=$DIR/apt
BIN_PATH=$ROOT/usr/sbin:$ROOT/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CONTAINERD_SOCK=$RUN/containerd/containerd.sock
DOCKERD_PID=$RUN/dockerd.pid
CONTAINERD_PID=$RUN/containerd.pid

# debian_mirror prints the URI of the system's main Debian archive: the
# first "deb" source for the system's own suite, in one-line or deb822 form.
debian_mirror() {
	local codename f
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
	[[ -n $codename ]] || return 0
	{
		for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
			[[ -r $f ]] || continue
			awk -v c="$codename" '$1 == "deb" {
				i = 2
				if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
				if ($(i + 1) == c) print $i
			}' "$f"
		done
		for f in /etc/apt/sources.list.d/*.sources; do
			[[ -r $f ]] || continue
			awk -v c="$codename" 'BEGIN { RS = "" } {
				types = ""; uris = ""; suites = ""
				n = split($0, line, "\n")
				for (j = 1; j <= n; j++) {
					if (line[j] ~ /^Types:/) types = " " substr(line[j], 7) " "
					if (line[j] ~ /^URIs:/) uris = substr(line[j], 6)
					if (line[j] ~ /^Suites:/) suites = " " substr(line[j], 8) " "
				}
				gsub(/[ \t]+/, " ", types); gsub(/[ \t]+/, " ", suites)
				if (index(types, " deb ") && index(suites, " " c " ")) { split(uris, u, " "); print u[1] }
			}' "$f"
		done
	} | head -n 1
}

# fetch downloads the packages into $DEBS unless they are there already.
fetch() {
	local p missing=()
	for p in "${PACKAGES[@]}"; do
		compgen -G "$DEBS/${p}_*.deb" >/dev/null || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	local mirror=${RTM_DOCKER_CURRENT_MIRROR:-$(debian_mirror)}
	[[ -n $mirror ]] || die "no Debian mirror found in /etc/apt/sources.list*; set RTM_DOCKER_CURRENT_MIRROR"
	local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
	mkdir -p "$APT/lists/partial" "$APT/archives/partial" "$APT/sources.list.d" "$APT/preferences.d" "$DEBS"
	echo "deb [signed-by=$keyring] $mirror $SUITE main" >"$APT/sources.list"
	: >"$APT/status"
	local opts=(
		-o "Dir::Etc::SourceList=$APT/sources.list" -o "Dir::Etc::SourceParts=$APT/sources.list.d"
		-o "Dir::Etc::Preferences=$APT/preferences" -o "Dir::Etc::PreferencesParts=$APT/preferences.d"
		-o "Dir::State=$APT" -o "Dir::State::Lists=$APT/lists" -o "Dir::State::status=$APT/status"
		-o "Dir::Cache=$APT" -o "Dir::Cache::archives=$APT/archives"
		-o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
		-o "APT::Sandbox::User=root"
	)
	say "fetching ${missing[*]} from $mirror $SUITE (private apt state in $APT)"
	apt-get "${opts[@]}" -qq update
	(cd "$DEBS" && apt-get "${opts[@]}" -qq download "${missing[@]}")
}

# unpack extracts the .debs into $ROOT unless it holds exactly these.
unpack() {
	local stamp
	stamp=$(cd "$DEBS" && ls -1 -- *.deb)
	if [[ -f $ROOT/.debs && $(<"$ROOT/.debs") == "$stamp" ]]; then
		return 0
	fi
	say "unpacking into $ROOT"
	rm -rf "$ROOT"
	mkdir -p "$ROOT"
	local f
	for f in "$DEBS"/*.deb; do
		dpkg-deb -x "$f" "$ROOT"
	done
	printf '%s\n' "$stamp" >"$ROOT/.debs"
}

# alive PIDFILE NAME: the pid file names a live process called NAME.
alive() {
	local pid
	[[ -r $1 ]] && pid=$(<"$1") && [[ -n $pid ]] || return 1
	[[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] &&
		! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null
}

answers() { timeout 10 docker -H "unix://$SOCK" version >/dev/null 2>&1; }

# store_in_use prints the image store of the running daemon.
store_in_use() {
	if docker -H "unix://$SOCK" info --format '{{json .DriverStatus}}' | grep -q 'io.containerd.snapshotter'; then
		echo containerd
	else
		echo graphdriver
	fi
}

# in_netns runs a daemon in the background inside $NETNS with a clean
# environment; the subshell execs, so $! is the daemon's pid.
in_netns() {
	local log=$1
	shift
	(exec nsenter --net="/run/netns/$NETNS" -- env -i PATH="$BIN_PATH" HOME=/root "$@") \
		</dev/null >>"$log" 2>&1 &
}

wait_for() {
	local what=$1 secs=$2
	shift 2
	local i
	for ((i = 0; i < secs * 5; i++)); do
		"$@" && return 0
		sleep 0.2
	done
	say "$what did not come up within ${secs}s"
	return 1
}

start() {
	[[ $(id -u) == 0 ]] || die "must run as root"
	local features
	case $IMAGE_STORE in
	graphdriver) features='{}' ;;
	containerd) features='{"containerd-snapshotter": true}' ;;
	*) die "RTM_DOCKER_CURRENT_IMAGE_STORE=$IMAGE_STORE: want graphdriver or containerd" ;;
	esac
	if answers; then
		if [[ $(store_in_use) == "$IMAGE_STORE" ]]; then
			echo "unix://$SOCK"
			return 0
		fi
		say "restarting dockerd for the $IMAGE_STORE image store"
		term "$DOCKERD_PID" dockerd
	fi
	local tool
	for tool in apt-get dpkg-deb ip nsenter iptables docker; do
		command -v "$tool" >/dev/null || die "$tool is missing"
	done
	command -v runc >/dev/null || die "runc is missing (apt-get install runc; the system's docker.io brings it)"
	fetch
	unpack
	mkdir -p "$RUN" "$DIR/log" "$DIR/etc"

	local docker0_before docker0_after
	docker0_before=$(ip -br addr show dev docker0 2>/dev/null | awk '{$2 = ""; print}' || true)

	if [[ ! -e /run/netns/$NETNS ]]; then
		ip netns add "$NETNS"
	fi
	ip -n "$NETNS" link set lo up

	if ! alive "$CONTAINERD_PID" containerd; then
		cat >"$DIR/etc/containerd.toml" <<-EOF
			version = 2
			root = "$DIR/containerd"
			state = "$RUN/containerd"
			disabled_plugins = ["io.containerd.grpc.v1.cri"]
			[grpc]
			  address = "$CONTAINERD_SOCK"
			[debug]
			  address = ""
		EOF
		say "starting containerd (log $DIR/log/containerd.log)"
		in_netns "$DIR/log/containerd.log" "$ROOT/usr/bin/containerd" --config "$DIR/etc/containerd.toml"
		echo $! >"$CONTAINERD_PID"
		if ! wait_for containerd 30 "$ROOT/usr/bin/ctr" --address "$CONTAINERD_SOCK" version >/dev/null 2>&1; then
			tail -n 30 "$DIR/log/containerd.log" >&2
			exit 1
		fi
	fi

	if ! alive "$DOCKERD_PID" dockerd; then
		# Its own config file, not the system's /etc/docker/daemon.json.
		echo "{\"features\": $features}" >"$DIR/etc/daemon.json"
		say "starting dockerd (log $DIR/log/dockerd.log)"
		in_netns "$DIR/log/dockerd.log" "$ROOT/usr/sbin/dockerd" \
			--config-file "$DIR/etc/daemon.json" \
			--data-root "$DIR/docker" --exec-root "$RUN/docker" --pidfile "$DOCKERD_PID" \
			-H "unix://$SOCK" --containerd "$CONTAINERD_SOCK"
	fi
	if ! wait_for dockerd 60 answers; then
		tail -n 30 "$DIR/log/dockerd.log" >&2
		exit 1
	fi

	docker0_after=$(ip -br addr show dev docker0 2>/dev/null | awk '{$2 = ""; print}' || true)
	if [[ $docker0_before != "$docker0_after" ]]; then
		die "the system's docker0 changed: before '$docker0_before', after '$docker0_after'"
	fi
	say "$(docker -H "unix://$SOCK" version --format 'docker server {{.Server.Version}} (API {{.Server.APIVersion}}), containerd {{range .Server.Components}}{{if eq .Name "containerd"}}{{.Version}}{{end}}{{end}}'), $(store_in_use) image store"
	[[ $(store_in_use) == "$IMAGE_STORE" ]] || die "dockerd runs with the $(store_in_use) image store, not $IMAGE_STORE"
	echo "unix://$SOCK"
}

# term PIDFILE NAME: SIGTERM the process and wait until it has gone.
term() {
	alive "$1" "$2" || return 0
	local pid i
	pid=$(<"$1")
	say "stopping $2 ($pid)"
	kill -TERM "$pid"
	for ((i = 0; i < 300; i++)); do
		[[ -e /proc/$pid ]] || return 0
		sleep 0.2
	done
	die "$2 ($pid) did not stop within 60s"
}

stop() {
	term "$DOCKERD_PID" dockerd
	term "$CONTAINERD_PID" containerd
}

# mounts_under prints the mount points under $DIR and $RUN, deepest first.
mounts_under() {
	awk -v d="$DIR/" -v r="$RUN/" 'index($5 "/", d) == 1 || index($5 "/", r) == 1 { print length($5), $5 }' \
		/proc/self/mountinfo | sort -rn | cut -d' ' -f2-
}

purge() {
	stop
	# dockerd bind-mounts its data root onto itself, and a killed daemon
	# leaves that and its containers' mounts behind. Never delete through
	# a mount.
	local m
	while read -r m; do
		[[ -n $m ]] && umount "$m"
	done < <(mounts_under)
	[[ -z $(mounts_under) ]] || die "mounts are left under $DIR or $RUN: $(mounts_under | tr '\n' ' ')"
	rm -rf "$DIR" "$RUN" "$SOCK"
	if [[ -e /run/netns/$NETNS ]]; then ip netns delete "$NETNS"; fi
}

status() {
	answers || die "no daemon answers on unix://$SOCK"
	docker -H "unix://$SOCK" version --format '{{.Server.Version}} (API {{.Server.APIVersion}})'
}

case ${1:-start} in
start) start ;;
stop) stop ;;
purge) purge ;;
status) status ;;
*) die "usage: $0 [start|stop|purge|status]" ;;
esac
