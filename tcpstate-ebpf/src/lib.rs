// Empty library so tcpstate-user can name this crate as a build dependency:
// cargo then rebuilds the loader when the kernel program's sources change.
#![no_std]
