# netpol-harness probe round, run inside a source pod with POSIX sh.
#
# Arguments: <parallel jobs>, then for each probe: <id> <input> <n> and the n words
# of the client's command line (curl, nc or /agnhost connect, exactly as the harness
# builds them for every backend). <input> is the line the client reads on standard
# input, "-" for none.
#
# Every probe runs as a background job (at most <parallel jobs> at once). When a
# batch has finished, each of its probes prints exactly one line:
#   NPH <id> <exit code> <elapsed ms> <stdout> <stderr>
# where stdout and stderr are what the client wrote (the first 4096 and 8192 bytes),
# hex-encoded so that no byte of theirs can break the line, "-" when empty. Lines are
# printed one probe at a time after the batch, never interleaved. The harness
# classifies them with the same code as the emulated backend's results.
#
# The clients bound themselves (curl -m, nc -w, agnhost connect --timeout); the exec
# that runs this script is bounded as a whole by the harness.
set -u
parallel=$1
shift
dir=$(mktemp -d "${TMPDIR:-/tmp}/nph.XXXXXX") || {
	echo "NPH-ERROR cannot create a temporary directory in ${TMPDIR:-/tmp}"
	exit 3
}
trap 'rm -rf "$dir"' EXIT
trap 'exit 130' INT TERM

# Milliseconds since boot from /proc/uptime (two decimals); the leading 1 keeps a
# fraction such as 05 from being read as octal.
now_ms() {
	read -r up _ < /proc/uptime
	echo $(( ${up%.*} * 1000 + 1${up#*.} * 10 - 1000 ))
}

# The first $2 bytes of file $1 as one hex word, "-" when empty.
hex() {
	h=$(head -c "$2" "$1" | od -An -v -tx1 | tr -d ' \n')
	printf '%s' "${h:--}"
}

probe() {
	# A background job: the round's clean-up belongs to the script, not to the job.
	trap - EXIT INT TERM
	id=$1 input=$2 n=$3
	shift 3
	# Keep the first n words of "$@": the client's command line.
	total=$#
	i=0
	while [ "$i" -lt "$total" ]; do
		if [ "$i" -lt "$n" ]; then
			set -- "$@" "$1"
		fi
		shift
		i=$((i + 1))
	done
	start=$(now_ms)
	if [ "$input" = - ]; then
		"$@" > "$dir/$id.out" 2> "$dir/$id.err" < /dev/null
	else
		printf '%s\n' "$input" | "$@" > "$dir/$id.out" 2> "$dir/$id.err"
	fi
	rc=$?
	elapsed=$(( $(now_ms) - start ))
	printf 'NPH %s %s %s %s %s\n' "$id" "$rc" "$elapsed" "$(hex "$dir/$id.out" 4096)" "$(hex "$dir/$id.err" 8192)" > "$dir/$id.res"
}

batch=""
running=0
flush() {
	wait
	for done_id in $batch; do
		cat "$dir/$done_id.res" 2> /dev/null || echo "NPH-ERROR probe $done_id left no result"
		rm -f "$dir/$done_id.out" "$dir/$done_id.err" "$dir/$done_id.res"
	done
	batch=""
	running=0
}

while [ $# -ge 3 ]; do
	id=$1 n=$3
	case $n in
		''|*[!0-9]*) echo "NPH-ERROR probe $id: word count $n is not a number"; exit 2 ;;
	esac
	if [ $# -lt $((3 + n)) ]; then
		break
	fi
	probe "$@" &
	shift $((3 + n))
	batch="$batch $id"
	running=$((running + 1))
	if [ "$running" -ge "$parallel" ]; then
		flush
	fi
done
flush
if [ $# -ne 0 ]; then
	echo "NPH-ERROR $# argument(s) left over: $*"
	exit 2
fi
