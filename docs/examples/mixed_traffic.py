# A mix on 127.0.0.1:10050: client-first closes, server-first closes, an
# abortive close (RST), a refused connect and a simultaneous close (CLOSING,
# made deterministic by dropping the server's FIN with nftables until the client
# has closed). Run it as root in a scratch namespace (the nftables rule is added
# and removed there):
#   ip netns add demo; ip -n demo link set lo up
#   tcpstate --netns demo --port 10050 --lifecycle &    # or --summary, --diagram ...
#   ip netns exec demo python3 mixed_traffic.py
import socket, struct, subprocess, time, random
random.seed(4)
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 10050)); srv.listen(64)
def pair():
    c = socket.create_connection(("127.0.0.1", 10050)); s, _ = srv.accept()
    c.sendall(b"x" * 100); s.recv(100)
    return c, s
for i in range(8):                       # client closes first
    c, s = pair(); time.sleep(random.uniform(0.01, 0.3))
    c.close(); s.recv(1); s.close()
for i in range(4):                       # server closes first
    c, s = pair(); time.sleep(random.uniform(0.01, 0.3))
    s.close(); c.recv(1); c.close()
c, s = pair(); time.sleep(0.05)          # abortive close: RST
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); c.close()
time.sleep(0.05); s.close()
try:                                     # refused: nobody listens on 127.0.0.2
    socket.create_connection(("127.0.0.2", 10050))
except ConnectionRefusedError:
    pass
nft = lambda script: subprocess.run(["nft", "-f", "-"], input=script.encode(), check=True)
c, s = pair()                            # simultaneous close
nft("""table inet demo_gate {
    chain input {
        type filter hook input priority 0; policy accept;
        tcp sport 10050 tcp flags & fin == fin drop
    }
}""")
s.close(); time.sleep(0.05); c.close(); time.sleep(0.05)
nft("delete table inet demo_gate")
time.sleep(0.5)
srv.close()
