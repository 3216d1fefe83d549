# Used for the examples in docs/output.md: `tcpstate --port 10050 [FORMAT]`, then
# `python3 one_connection.py`.
# One connection on 127.0.0.1:10050: the client sends a request, the server
# answers, the client closes first, then the server; then the listener closes.
import socket, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 10050)); srv.listen(16)
time.sleep(0.1)
c = socket.create_connection(("127.0.0.1", 10050))
s, _ = srv.accept()
c.sendall(b"GET / HTTP/1.0\r\n\r\n"); s.recv(100); s.sendall(b"HTTP/1.0 200 OK\r\n\r\n"); c.recv(100)
time.sleep(0.2)
c.close(); s.recv(1); s.close()
time.sleep(0.1)
srv.close()
