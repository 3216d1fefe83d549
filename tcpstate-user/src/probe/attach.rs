//! Loading and attaching each program: the two state-change programs
//! (verified on two threads), the SYN-ACK and cause hooks (optional: a
//! missing one is said under `--verbose`, not fatal), and the classic
//! tracepoint fallback.

use std::path::Path;

use aya::{
    Ebpf,
    programs::{BtfTracePoint, ProgramError, TracePoint},
};
use tcpstate_common::names;

use super::errors::program_error;
use crate::{error::UserError, kernel_btf};

/// The OS error under an aya error, for messages (aya's Display omits it).
pub(super) fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

/// Program `name` of tcpstate's own object as its kind `P`. The object is
/// built with this binary, so a missing program is a build bug, not
/// something a user can meet.
pub(super) fn program<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P, ProgramError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .unwrap_or_else(|| panic!("program {name} is in the object"))
        .try_into()
}

/// Attaches the SYN-ACK retransmit hook, where half-open connections that
/// linger show: the BTF tracepoint when kernel BTF allows it (the kernel
/// never skips it for another tool's program running on the CPU), else the
/// classic one. Optional: without it tcpstate still traces every state
/// change, and says what it cannot see. Returns the attached program's
/// descriptor, for its own count of runs the kernel skipped.
pub(super) fn attach_synack(
    ebpf: &mut Ebpf,
    btf_id: Option<u32>,
    classic_present: bool,
    say: &mut dyn FnMut(&str),
) -> Option<std::os::fd::OwnedFd> {
    if let Some(id) = btf_id {
        let r = (|| -> Result<(String, Option<std::os::fd::OwnedFd>), ProgramError> {
            let p: &mut BtfTracePoint = program(ebpf, names::SYNACK_BTF_PROGRAM)?;
            let (loaded, took) = timed(|| p.load_with_btf_id(id));
            loaded?;
            p.attach()?;
            Ok((verified(p.info(), took), own_fd(p.fd()).ok()))
        })();
        match r {
            Ok((stats, fd)) => {
                say(&format!(
                    "attached to tp_btf/tcp_retransmit_synack ({stats})"
                ));
                return fd;
            }
            Err(e) => say(&format!(
                "tp_btf/tcp_retransmit_synack: {e}: {}; trying the classic tracepoint",
                source_chain(&e)
            )),
        }
    }
    if !classic_present {
        say("half-open connections are not seen: no tcp:tcp_retransmit_synack");
        return None;
    }
    let r = (|| -> Result<(String, Option<std::os::fd::OwnedFd>), ProgramError> {
        let p: &mut TracePoint = program(ebpf, names::SYNACK_CLASSIC_PROGRAM)?;
        let (loaded, took) = timed(|| p.load());
        loaded?;
        p.attach("tcp", "tcp_retransmit_synack")?;
        Ok((verified(p.info(), took), own_fd(p.fd()).ok()))
    })();
    match r {
        Ok((stats, fd)) => {
            say(&format!("attached to tcp:tcp_retransmit_synack ({stats})"));
            fd
        }
        Err(e) => {
            say(&format!(
                "half-open connections are not seen (tcp:tcp_retransmit_synack: {e}: {})",
                source_chain(&e)
            ));
            None
        }
    }
}

/// Attaches the nested-run program after the main one (the kernel calls
/// them in attach order). Optional: without it, the changes the kernel skips
/// while the main program runs are counted as lost.
/// Returns its descriptor (for its own skip counter) once attached.
fn attach_nested(
    ebpf: &mut Ebpf,
    loaded: Result<(), ProgramError>,
    say: &mut dyn FnMut(&str),
) -> Option<std::os::fd::OwnedFd> {
    let r = loaded.and_then(|()| {
        let p: &mut BtfTracePoint = program(ebpf, names::NESTED_PROGRAM)?;
        p.attach()?;
        Ok(own_fd(p.fd()).ok())
    });
    match r {
        Ok(fd) => {
            say("attached the nested-run program to tp_btf/inet_sock_set_state");
            fd
        }
        Err(e) => {
            say(&format!(
                "nested runs will be counted as lost (nested-run program: {e}: {})",
                source_chain(&e)
            ));
            None
        }
    }
}

/// Loads the main and the nested-run state-change programs, each verified on
/// its own thread: verification is most of start-up, and the two are the
/// same size. The main program's failure is fatal; the nested one's is
/// returned for [`attach_nested`] to report.
fn load_state_change_programs(
    ebpf: &mut Ebpf,
    btf_id: u32,
    say: &mut dyn FnMut(&str),
) -> Result<Result<(), ProgramError>, UserError> {
    let (mut main, mut nested) = (None, None);
    for (name, prog) in ebpf.programs_mut() {
        if name == names::BTF_PROGRAM {
            main = Some(prog);
        } else if name == names::NESTED_PROGRAM {
            nested = Some(prog);
        }
    }
    let main: &mut BtfTracePoint = main
        .expect("program is in the object")
        .try_into()
        .map_err(|e| program_error("program type", e))?;
    let nested: Result<&mut BtfTracePoint, ProgramError> =
        nested.expect("nested program is in the object").try_into();
    let ((main_loaded, main_took), nested_loaded) = std::thread::scope(|s| {
        let other = s.spawn(move || {
            nested.and_then(|p| {
                let (r, took) = timed(|| p.load_with_btf_id(btf_id));
                r.map(|()| verified(p.info(), took))
            })
        });
        (timed(|| main.load_with_btf_id(btf_id)), other.join())
    });
    main_loaded.map_err(|e| program_error("loading the program", e))?;
    say(&format!(
        "verified {}: {}",
        names::BTF_PROGRAM,
        verified(main.info(), main_took)
    ));
    let nested_loaded = nested_loaded.unwrap_or_else(|_| {
        Err(ProgramError::SyscallError(aya::sys::SyscallError {
            call: "verifier thread",
            io_error: std::io::Error::other("panicked"),
        }))
    });
    Ok(nested_loaded.map(|stats| say(&format!("verified {}: {stats}", names::NESTED_PROGRAM))))
}

/// Loads and attaches the BTF state-change program and its nested-run
/// companion; the descriptor of the main one, for its skip counter.
pub(super) fn attach_btf_state_change(
    ebpf: &mut Ebpf,
    btf_id: u32,
    say: &mut dyn FnMut(&str),
) -> Result<(std::os::fd::OwnedFd, Option<std::os::fd::OwnedFd>), UserError> {
    let nested_loaded = load_state_change_programs(ebpf, btf_id, say)?;
    let program: &mut BtfTracePoint =
        program(ebpf, names::BTF_PROGRAM).map_err(|e| program_error("program type", e))?;
    // aya keeps the link with the program: detached at unload.
    program
        .attach()
        .map_err(|e| program_error("attaching to tp_btf/inet_sock_set_state", e))?;
    let fd = own_fd(program.fd())?;
    let nested = attach_nested(ebpf, nested_loaded, say);
    Ok((fd, nested))
}

/// After a refusal: whichever of the two BTF state-change programs did load
/// is unloaded, so nothing of the refused hook stays in the kernel.
pub(super) fn unload_btf_state_change(ebpf: &mut Ebpf) {
    for name in [names::BTF_PROGRAM, names::NESTED_PROGRAM] {
        if let Ok(p) = program::<BtfTracePoint>(ebpf, name) {
            let _ = p.unload();
        }
    }
}

/// Loads and attaches the classic state-change program.
pub(super) fn attach_classic_state_change(
    ebpf: &mut Ebpf,
    tracing: &Path,
    say: &mut dyn FnMut(&str),
) -> Result<std::os::fd::OwnedFd, UserError> {
    let program: &mut TracePoint =
        program(ebpf, names::CLASSIC_PROGRAM).map_err(|e| program_error("program type", e))?;
    let (loaded, took) = timed(|| program.load());
    loaded.map_err(|e| program_error("loading the program", e))?;
    say(&format!(
        "verified {}: {}",
        names::CLASSIC_PROGRAM,
        verified(program.info(), took)
    ));
    attach_classic(program, tracing)?;
    own_fd(program.fd())
}

/// Runs `f`, with how long it took.
pub(super) fn timed<T>(f: impl FnOnce() -> T) -> (T, std::time::Duration) {
    let start = std::time::Instant::now();
    let r = f();
    (r, start.elapsed())
}

/// What the verifier did for a loaded program, for `--verbose`: the
/// instructions it processed (the kernel's limit is 1,000,000) and how long
/// loading took.
pub(super) fn verified(
    info: Result<aya::programs::ProgramInfo, ProgramError>,
    took: std::time::Duration,
) -> String {
    let insns = info
        .ok()
        .and_then(|i| i.verified_instruction_count())
        .map_or_else(
            || "? instructions".to_string(),
            |n| format!("{n} instructions"),
        );
    format!("{insns} in {:.1} ms", took.as_secs_f64() * 1e3)
}

/// Attaches the cause hooks (resets, socket errors, retransmits) that exist
/// on this kernel. Each is optional: without one, the rows it would explain
/// say only what the state changes show.
pub(super) fn attach_causes(
    ebpf: &mut Ebpf,
    kbtf: &kernel_btf::KernelBtf,
    say: &mut dyn FnMut(&str),
) {
    for ((name, tp), id) in kernel_btf::CAUSE_HOOKS.iter().zip(kbtf.cause_btf_ids) {
        let Some(id) = id else {
            say(&format!(
                "no tp_btf/{tp} in kernel BTF: its reasons are not shown"
            ));
            continue;
        };
        let r = (|| -> Result<String, ProgramError> {
            let p: &mut BtfTracePoint = program(ebpf, name)?;
            let (loaded, took) = timed(|| p.load_with_btf_id(id));
            loaded?;
            p.attach()?;
            Ok(verified(p.info(), took))
        })();
        match r {
            Ok(stats) => say(&format!("attached to tp_btf/{tp} ({stats})")),
            Err(e) => say(&format!(
                "reasons from {tp} are not shown ({e}: {})",
                source_chain(&e)
            )),
        }
    }
}

/// Our own handle on a program: its skip counter stays readable after aya
/// detaches and unloads it at exit (the kernel keeps a program alive while a
/// descriptor refers to it).
fn own_fd(
    fd: Result<&aya::programs::ProgramFd, ProgramError>,
) -> Result<std::os::fd::OwnedFd, UserError> {
    use std::os::fd::AsFd;
    fd.map_err(|e| program_error("program fd", e))?
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| UserError::runtime(format!("duplicating the program fd: {e}")))
}

fn attach_classic(program: &mut TracePoint, tracing: &Path) -> Result<(), UserError> {
    program.attach("sock", "inet_sock_set_state").map(drop).map_err(|e| {
        let missing = matches!(&e, ProgramError::SyscallError(s) if s.io_error.kind() == std::io::ErrorKind::NotFound)
            || !tracing.join("events/sock/inet_sock_set_state/id").exists();
        let err = program_error("attaching to sock:inet_sock_set_state", e);
        if missing {
            err.hint("the tracepoint sock:inet_sock_set_state does not exist on this kernel")
        } else {
            err
        }
    })
}
