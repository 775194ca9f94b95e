#!/bin/sh
# Deploys a new build of a server that has a control socket: puts the binary in place, restarts
# over the control socket, and puts the previous binary back if the restart failed.
# Usage: deploy.sh NEW_BINARY INSTALLED_BINARY CONTROL_SOCKET
set -eu
new=$1 installed=$2 control=$3

cp -p "$installed" "$installed.previous"
cp "$new" "$installed.next"    # beside the installed one, so the mv below is atomic
mv -f "$installed.next" "$installed"

# socat waits -t seconds for the answer once it has sent the request: a restart answers within
# READY_TIMEOUT (60 s by default). The answers (README, "Control socket"): `ok` and `failed`
# end the restart; `error busy`, or no answer at all, mean the request was not taken: it is
# asked again (the new binary is in place either way); any other `error`: nothing restarted.
tries=20
while :; do
    answer=$(echo restart | socat -t 70 - "UNIX-CONNECT:$control" 2>/dev/null) || :
    case $answer in
    "error busy"* | "") ;;
    *) break ;;
    esac
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || break
    echo "${answer:-no answer from $control}; asking again" >&2
    sleep 1
done
case $answer in
ok\ *)
    rm -f "$installed.previous"
    echo "deployed: $answer"
    ;;
*)
    mv -f "$installed.previous" "$installed"
    echo "restart failed, previous binary restored: ${answer:-no answer from $control}" >&2
    exit 1
    ;;
esac
