#!/bin/sh
# kindnetd's part of kind's contract, no more: refuses to run unless kind's templating filled
# in POD_SUBNET and added CONTROL_PLANE_ENDPOINT, then writes a bridge conflist for that
# subnet where kindnetd writes its own (the manifest's cni-cfg mount) and stays up.
case "$POD_SUBNET" in
  "" | *"{{"*) echo "kindnetd stand-in: POD_SUBNET not filled in: '$POD_SUBNET'" >&2; exit 1 ;;
esac
[ -n "$CONTROL_PLANE_ENDPOINT" ] || { echo "kindnetd stand-in: no CONTROL_PLANE_ENDPOINT" >&2; exit 1; }
cat > /etc/cni/net.d/10-kindnet.conflist <<CONF
{"cniVersion": "0.3.1", "name": "kindnet", "plugins": [
  {"type": "bridge", "bridge": "kind0", "isGateway": true, "ipMasq": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_SUBNET"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
CONF
exec sleep infinity
