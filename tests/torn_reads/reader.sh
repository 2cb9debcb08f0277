#!/usr/bin/env bash
# A shell reader, as a cron job is: reads a token with `cat` (or from the socket with curl) in a
# loop until STOP exists, and counts reads that are not one complete token of the expected form.
# Usage: reader.sh file|header|socket PATH HEADER STOP [SOCKET_URL]
# HEADER is the token's first JWT part, the same for every token the issuer signs.
set -u
kind=$1 path=$2 header=$3 stop=$4
reads=0 bad=0
while [ ! -e "$stop" ]; do
  case $kind in
    file) text=$(cat "$path") ;;
    header) text=$(cat "$path"); text=${text#Authorization: Bearer } ;;
    socket)
      text=$(curl -s --max-time 10 -w '\n%{http_code}' --unix-socket "$path" "$5") || text="(curl failed: $?)"
      case $text in
        *$'\n'200) text=${text%$'\n'200} ;;
        *) text="(HTTP $(date +%T.%N): $text)" ;;
      esac ;;
  esac
  IFS=. read -r h p s rest <<<"$text"
  if [ "$h" != "$header" ] || [ ${#p} -lt 40 ] || [ ${#s} -ne 86 ] || [ -n "$rest" ] ||
     [[ "$p$s" == *[!A-Za-z0-9_-]* ]]; then
    bad=$((bad + 1))
    [ $bad -le 3 ] && printf 'bad read of %s: %q\n' "$path" "$text" >&2
  fi
  reads=$((reads + 1))
done
echo "$reads $bad"
