# netpol-harness probe round, run inside a source pod with POSIX sh.
#
# Arguments: <timeout seconds> <timeout milliseconds> <parallel jobs>, then four
# words per probe: <id> <TCP|UDP|SCTP> <IPv4 address> <port>.
# Every probe runs as a background job (at most <parallel jobs> at once) and prints
# exactly one line:
#   NPH <id> <class> <exit code> <elapsed ms> <responder> <message>
# class: OK, TIMEOUT, REFUSED, DNS, NOREPLY (TCP connected, nothing answered),
# UNKNOWN or OTHER. responder is the server's reply (agnhost porter answers with
# its endpoint id), "-" when unknown; message is the client's error text, "-" when
# none. Neither contains spaces.
# TCP and UDP use socat, which reports the errno of a failed connect and prints the
# reply; a UDP probe counts as connected only when the server answers. SCTP (and
# everything when socat is missing) uses agnhost connect, which prints an error
# class (TIMEOUT, REFUSED, DNS, UNKNOWN, OTHER) but not who answered.
set -u
t=$1
t_ms=$2
parallel=$3
shift 3
agnhost=${NPH_AGNHOST:-/agnhost}
if command -v socat >/dev/null 2>&1; then have_socat=1; else have_socat=0; fi
nl='
'

# Milliseconds since boot from /proc/uptime (two decimals); the leading 1 keeps a
# fraction such as 05 from being read as octal.
now_ms() {
	read -r up _ < /proc/uptime
	echo $(( ${up%.*} * 1000 + 1${up#*.} * 10 - 1000 ))
}

# One word for the result line: characters that could break it become _.
word() {
	printf '%s' "$1" | tr -c 'A-Za-z0-9./:_=-' '_' | cut -c1-160
}

probe() {
	id=$1 proto=$2 addr=$3 port=$4
	start=$(now_ms)
	responder=-
	if [ "$proto" != SCTP ] && [ "$have_socat" = 1 ]; then
		if [ "$proto" = TCP ]; then
			out=$(printf 'GET / HTTP/1.0\r\n\r\n' | socat -T"$t" -t"$t" - "TCP4:$addr:$port,connect-timeout=$t" 2>&1)
			rc=$?
		else
			out=$(printf 'hostname\n' | socat -T"$t" -t"$t" - "UDP4:$addr:$port" 2>&1)
			rc=$?
		fi
		if [ "$rc" = 0 ]; then
			# The HTTP body, or the UDP reply, is the last line.
			reply=$(printf '%s' "${out##*"$nl"}" | tr -d '\r')
			out=
			if [ -n "$reply" ]; then
				class=OK
				responder=$reply
			elif [ "$proto" = UDP ]; then
				class=TIMEOUT
			else
				class=NOREPLY
			fi
		else
			# socat prefixes its errors with a date, its pid and " E ".
			case $out in *" E "*) out=${out#*" E "} ;; esac
			case $out in
				*refused*) class=REFUSED ;;
				*"timed out"*) class=TIMEOUT ;;
				*getaddrinfo*|*resolv*) class=DNS ;;
				*) class=OTHER ;;
			esac
		fi
	elif [ -x "$agnhost" ]; then
		lower=$(printf '%s' "$proto" | tr 'A-Z' 'a-z')
		out=$("$agnhost" connect "$addr:$port" --timeout="${t_ms}ms" --protocol="$lower" 2>&1)
		rc=$?
		if [ "$rc" = 0 ]; then
			class=OK
		else
			class=${out%%[!A-Z]*}
			case $class in
				TIMEOUT|REFUSED|DNS|UNKNOWN|OTHER) ;;
				*) class=OTHER ;;
			esac
		fi
	else
		rc=127
		class=UNKNOWN
		out="no $proto client: neither socat nor $agnhost in the probe image"
	fi
	printf 'NPH %s %s %s %s %s %s\n' "$id" "$class" "$rc" "$(( $(now_ms) - start ))" "$(word "$responder")" "$(word "${out:--}")"
}

running=0
while [ $# -ge 4 ]; do
	probe "$1" "$2" "$3" "$4" &
	shift 4
	running=$((running + 1))
	if [ "$running" -ge "$parallel" ]; then
		wait
		running=0
	fi
done
wait
if [ $# -ne 0 ]; then
	echo "NPH-ERROR $# argument(s) left over: $*"
	exit 2
fi
