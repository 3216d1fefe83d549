//! Containers right for every process: each row names the container of the
//! socket it belongs to, from the socket's cgroup as the kernel keeps it,
//! also for clients that exited milliseconds after their connection, for
//! the containers of one pod (one network namespace), and for a container
//! started after the tracer; `--container` keeps exactly one container's
//! rows, judged in the kernel. Real podman containers (runc, images built
//! FROM scratch holding `tcppeer` alone), traced from the host.

use std::{collections::HashMap, process::Command, time::Duration};

use serde_json::Value;
use tcpstate_tests::fleet::*;
use tcpstate_tests::{tcppeer_bin, tracer_bin};

/// Kernel state changes of one connection made by [`ServeContainer::burst`]
/// (client: CLOSE->SYN_SENT->ESTABLISHED->FIN_WAIT1->FIN_WAIT2->CLOSE;
/// server: LISTEN->SYN_RECV->ESTABLISHED->CLOSE_WAIT->LAST_ACK->CLOSE).
const CHANGES_PER_CONNECTION: usize = 10;

fn image(name: &str) -> Image {
    Image::build(
        &format!("localhost/tcpstate-test-{name}:{}", std::process::id()),
        &[(&tcppeer_bin(), "/tcppeer")],
    )
}

/// `tcpstate ARGS` on the host, as users run it, once it is tracing.
fn tracer(args: &[&str]) -> Proc {
    let mut t = Proc::spawn(Command::new(tracer_bin()).args(args));
    t.wait_stderr("Tracing TCP state changes", Duration::from_secs(30));
    t
}

fn json_rows(out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Rows that are kernel state changes (not snapshot, tracker or cause rows).
fn kernel_changes(rows: &[Value]) -> Vec<&Value> {
    rows.iter()
        .filter(|r| r["source"] == "tracepoint" && r["oldstate"] != r["newstate"])
        .collect()
}

/// `n` containers named `prefix<i>`, each serving `port` on its loopback.
fn start_containers(image: &Image, prefix: &str, n: usize, port: u16) -> Vec<ServeContainer> {
    (0..n)
        .map(|i| ServeContainer::start(image, &format!("{prefix}{i}"), port, None))
        .collect()
}

/// A burst of `n` clients in every container at once.
fn burst_all(containers: &[ServeContainer], n: usize, port: u16) -> Vec<Vec<ShortClient>> {
    std::thread::scope(|s| {
        let bursts: Vec<_> = containers
            .iter()
            .map(|c| s.spawn(move || c.burst(n, port)))
            .collect();
        bursts.into_iter().map(|b| b.join().unwrap()).collect()
    })
}

/// Lets the last changes of the connections reach the tracer (the
/// server's LAST_ACK->CLOSE follows the client's final ACK).
fn settle() {
    std::thread::sleep(Duration::from_millis(700));
}

/// 50 clients over 5 containers at once, each process gone within a
/// millisecond of closing, traced by `tcpstate --port P` in JSON and wide
/// text: every row of every connection names its container, including the
/// changes made after the client exited; a connection on the host names
/// none.
#[test]
fn fifty_short_lived_clients_in_five_containers_each_row_names_its_container() {
    let image = image("burst");
    let port = 10131;
    let containers = start_containers(&image, "tcpstate-burst", 5, port);
    let by_netns: HashMap<u64, String> = containers
        .iter()
        .map(|c| (c.container.netns_inode(), c.container.id()))
        .collect();
    let port_arg = port.to_string();
    let json = tracer(&["--port", &port_arg, "-j"]);
    let wide = tracer(&["--port", &port_arg, "-w"]);

    let clients = burst_all(&containers, 10, port);
    // One connection on the host itself, on loopback.
    let host_listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let host_client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (host_server, _) = host_listener.accept().unwrap();
    drop(host_client);
    drop(host_server);
    drop(host_listener);
    settle();
    let (json, json_err) = json.stop();
    let (wide, _) = wide.stop();

    let rows = json_rows(&json);
    let in_containers: Vec<&Value> = rows
        .iter()
        .filter(|r| by_netns.contains_key(&r["netns"].as_u64().unwrap_or(0)))
        .collect();
    let right = in_containers
        .iter()
        .filter(|r| r["container_id"].as_str() == Some(&by_netns[&r["netns"].as_u64().unwrap()]))
        .count();
    eprintln!(
        "rows naming their container: {right} of {} (50 short-lived clients, 5 containers)",
        in_containers.len()
    );
    let wrong: Vec<&&Value> = in_containers
        .iter()
        .filter(|r| r["container_id"].as_str() != Some(&by_netns[&r["netns"].as_u64().unwrap()]))
        .collect();
    assert!(
        wrong.is_empty(),
        "rows without their container: {wrong:#?}\n{json_err}"
    );
    let changes = kernel_changes(&rows)
        .into_iter()
        .filter(|r| by_netns.contains_key(&r["netns"].as_u64().unwrap_or(0)))
        .count();
    assert_eq!(changes, 50 * CHANGES_PER_CONNECTION, "{json}\n{json_err}");

    // Each client's own rows carry its owner (the kernel saw it connect;
    // its pid is the host's, not the container's) and its container,
    // though it was gone before most of them.
    // (Each container has its own namespace: two clients in two of them
    // may have the same local port.)
    for (c, burst) in containers.iter().zip(&clients) {
        let id = c.container.id();
        let netns = c.container.netns_inode();
        for client in burst {
            let own: Vec<&&Value> = in_containers
                .iter()
                .filter(|r| r["netns"].as_u64() == Some(netns))
                .filter(|r| r["lport"].as_u64() == Some(client.lport as u64))
                .filter(|r| r["source"] == "tracepoint")
                .collect();
            // All but CLOSE->SYN_SENT, which has no local port yet.
            assert!(own.len() >= 4, "client {client:?}: {own:#?}");
            for r in own {
                assert!(r["pid"].as_u64().is_some(), "{r}");
                assert_eq!(r["comm"], "tcppeer", "{r}");
                assert_eq!(r["container_id"].as_str(), Some(id.as_str()), "{r}");
            }
        }
    }

    // The host's connection: in no container.
    let host: Vec<&Value> = rows
        .iter()
        .filter(|r| !by_netns.contains_key(&r["netns"].as_u64().unwrap_or(0)))
        .filter(|r| r["source"] == "tracepoint")
        .collect();
    assert!(host.len() >= CHANGES_PER_CONNECTION, "{json}");
    for r in &host {
        assert_eq!(r["container_id"], Value::Null, "{r}");
    }

    // Wide text, as a person reads it: the container's short ID on every
    // row of its namespace (the third column).
    let mut named = 0;
    for l in wide.lines().skip(1).filter(|l| l.contains(" -> ")) {
        let netns: u64 = l
            .split_whitespace()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if let Some(id) = by_netns.get(&netns) {
            assert!(l.contains(&id[..12]), "{l}");
            named += 1;
        }
    }
    assert!(
        named >= 50 * CHANGES_PER_CONNECTION,
        "{named} rows:\n{wide}"
    );
}

/// A pod: two containers sharing one network namespace, the server in one
/// and the clients in the other. Each row names the container its socket
/// belongs to, not the namespace's.
#[test]
fn a_pod_of_two_containers_each_row_names_its_own() {
    let image = image("pod");
    let pod = Pod::create("tcpstate-pod");
    let port = 10132;
    let server = ServeContainer::start(&image, "tcpstate-pod-server", port, Some(&pod));
    // Its own server (on another port) only keeps it running.
    let client = ServeContainer::start(&image, "tcpstate-pod-client", port + 1, Some(&pod));
    let netns = server.container.netns_inode();
    assert_eq!(
        netns,
        client.container.netns_inode(),
        "one namespace per pod"
    );
    let (server_id, client_id) = (server.container.id(), client.container.id());
    let port_arg = port.to_string();
    let t = tracer(&["--port", &port_arg, "-j"]);
    let lifecycle = tracer(&["--port", &port_arg, "-j", "--lifecycle"]);
    let clients = client.burst(5, port);
    settle();
    let (out, err) = t.stop();
    let (lifecycle, _) = lifecycle.stop();

    // One history per socket, each naming its own container.
    let histories: Vec<Value> = json_rows(&lifecycle)
        .into_iter()
        .filter(|r| r["netns"].as_u64() == Some(netns) && r["role"] != "listener")
        .collect();
    assert_eq!(histories.len(), 2 * 5, "{lifecycle}");
    for h in &histories {
        let expected = match h["role"].as_str() {
            Some("server") => &server_id,
            Some("client") => &client_id,
            _ => panic!("{h}"),
        };
        assert_eq!(h["container_id"].as_str(), Some(expected.as_str()), "{h}");
    }

    let rows: Vec<Value> = json_rows(&out)
        .into_iter()
        .filter(|r| r["netns"].as_u64() == Some(netns))
        .collect();
    assert_eq!(
        kernel_changes(&rows).len(),
        5 * CHANGES_PER_CONNECTION,
        "{out}\n{err}"
    );
    for r in &rows {
        let expected = if r["lport"].as_u64() == Some(port as u64) {
            &server_id
        } else {
            &client_id
        };
        assert_eq!(r["container_id"].as_str(), Some(expected.as_str()), "{r}");
    }
    let client_rows = rows
        .iter()
        .filter(|r| {
            clients
                .iter()
                .any(|c| r["lport"].as_u64() == Some(c.lport as u64))
        })
        .count();
    assert!(client_rows >= 5 * 5, "{out}");
}

/// A container created and started after the tracer: named on its first
/// row, and `--container` with a prefix of its ID (which did not exist
/// when the tracer started) keeps its rows.
#[test]
fn a_container_started_after_the_tracer_is_named_on_its_first_row() {
    let image = image("late");
    let port = 10133;
    let port_arg = port.to_string();
    let all = tracer(&["--port", &port_arg, "-j"]);
    let late = ServeContainer::create(&image, "tcpstate-late", port, None);
    let id = late.container.id();
    let filtered = tracer(&["--port", &port_arg, "-j", "--container", &id[..10]]);
    late.start_created();
    let netns = late.container.netns_inode();
    late.burst(3, port);
    settle();
    let (all, err) = all.stop();
    let (filtered, _) = filtered.stop();

    let rows: Vec<Value> = json_rows(&all)
        .into_iter()
        .filter(|r| r["netns"].as_u64() == Some(netns))
        .collect();
    let first = rows
        .first()
        .unwrap_or_else(|| panic!("no rows:\n{all}\n{err}"));
    assert_eq!(
        (&first["oldstate"], &first["newstate"]),
        (&"CLOSE".into(), &"LISTEN".into()),
        "{first}"
    );
    for r in &rows {
        assert_eq!(r["container_id"].as_str(), Some(id.as_str()), "{r}");
    }
    assert_eq!(
        kernel_changes(&rows).len(),
        1 + 3 * CHANGES_PER_CONNECTION,
        "{all}"
    );
    let kept = json_rows(&filtered);
    assert_eq!(kept.len(), rows.len(), "{filtered}");
    assert!(
        kept.iter()
            .all(|r| r["container_id"].as_str() == Some(id.as_str()))
    );
}

/// Three containers busy on the same port, `tcpstate --port P --container
/// ID` in plain text as a user types it: exactly that container's rows. The
/// kernel program drops the other two containers' changes itself (the exit
/// report counts them).
#[test]
fn container_filter_with_three_busy_containers_keeps_exactly_one() {
    let image = image("filter");
    let port = 10134;
    let containers = start_containers(&image, "tcpstate-filter", 3, port);
    let chosen = &containers[1];
    let id = chosen.container.id();
    let port_arg = port.to_string();
    let text = tracer(&["--port", &port_arg, "--container", &id[..12]]);
    let json = tracer(&["--port", &port_arg, "--container", &id[..12], "-j", "-v"]);
    let clients = burst_all(&containers, 8, port);
    settle();
    let (text, _) = text.stop();
    let (json, json_err) = json.stop();

    let netns = chosen.container.netns_inode();
    let rows = json_rows(&json);
    assert!(
        rows.iter().all(|r| r["netns"].as_u64() == Some(netns)
            && r["container_id"].as_str() == Some(id.as_str())),
        "{json}"
    );
    assert_eq!(
        kernel_changes(&rows).len(),
        8 * CHANGES_PER_CONNECTION,
        "{json}\n{json_err}"
    );
    assert!(
        json_err.contains("container filter: in the kernel"),
        "{json_err}"
    );
    // The other two containers' 16 connections never left the kernel
    // (nor any other test's connection whose ephemeral port is this one).
    let dropped: usize = json_err
        .lines()
        .find_map(|l| {
            l.strip_suffix(
                " changes of other cgroups' sockets dropped in the kernel \
                 (--container/--cgroup; filtered, not lost)",
            )?
            .strip_prefix("tcpstate: ")?
            .parse()
            .ok()
        })
        .unwrap_or_else(|| panic!("no count of changes dropped in the kernel:\n{json_err}"));
    assert!(dropped >= 16 * CHANGES_PER_CONNECTION, "{json_err}");

    // The text rows: the same rows as the JSON ones, none with a port of
    // another container's clients in its LPORT or RPORT column (the 5th and
    // 7th: TIME PID COMM LADDR LPORT RADDR RPORT ...).
    let transitions = rows.iter().filter(|r| r["kind"] == "transition").count();
    let other_ports: Vec<String> = clients
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .flat_map(|(_, b)| b.iter().map(|c| c.lport.to_string()))
        .filter(|p| !clients[1].iter().any(|c| c.lport.to_string() == *p))
        .collect();
    let text_rows: Vec<&str> = text
        .lines()
        .skip(1)
        .filter(|l| l.contains(" -> "))
        .collect();
    assert_eq!(text_rows.len(), transitions, "{text}\n{json}");
    for l in &text_rows {
        let words: Vec<&str> = l.split_whitespace().collect();
        for port in [words[4], words[6]] {
            assert!(!other_ports.iter().any(|p| p == port), "{l}");
        }
    }
}
