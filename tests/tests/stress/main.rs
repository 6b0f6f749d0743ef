//! Timing-sensitive load, in a binary of its own: cargo runs test binaries one after
//! another, so no test of another binary runs beside these (they run beside each other, on
//! the harness's threads). The whole system under AWS pressure: a boot storm at Route53's
//! rate limit, and join, leave and apply at 30 % injected faults.

mod aws_faults;
mod boot_storm;
