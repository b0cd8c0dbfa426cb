# Starts this pod's Redis server: the master, if the Sentinels name this pod
# (or, at the first start of the set, for redis-0), else a replica of the
# master they name (master.sh). Each announces its DNS name, which the
# Sentinels hand to the clients. Protected mode is off, as in the official
# image: the NetworkPolicy says who may connect.
set -eu
me="$(hostname).redis"
. "$(dirname "$0")/master.sh"
set -- redis-server --appendonly yes --protected-mode no --replica-announce-ip "$me"
if [ "$master" != "$me" ]; then
  set -- "$@" --replicaof "$master" 6379
fi
exec "$@"
