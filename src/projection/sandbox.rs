//! The sandbox a projector runs in: the one wasmtime `Engine` (deterministic
//! compilation settings, pooling allocator), the per-store resource limiter, and
//! the deterministic WASI subset (frozen clocks, timers that fire at once,
//! seeded randomness, no files, no environment, no network, captured stdio). It owns every knob that decides
//! whether two runs of the same event give the same result, and must never
//! expose host time, host entropy, host files or the network to a guest.

use super::host::HostState;
use super::Limits;
use crate::digest::Sha256;
use bytes::Bytes;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Linker, Resource};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig,
    ResourceLimiter, StoreLimits, StoreLimitsBuilder,
};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiView};

/// How many stores may be alive at once across all threads calling
/// `ProjectorSet::project` (one per call in flight). The pool reserves address
/// space, not memory, for each slot.
pub(crate) const CONCURRENT_STORES: u32 = 32;

/// Core instances, memories and tables a single component may use. A component
/// built by `wit-component` from a wasm32-wasip2 Rust crate has a handful of
/// core instances (main module, shims, fixups) and one memory.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 16;

/// Bytes of each freed linear memory (and table) kept resident: `memset` in
/// place on reuse instead of `madvise`d away and faulted in again. Only the
/// memory an instance had is reset, so the core projector (one 64 KiB page,
/// see docs/PROJECTORS.md) pays for 64 KiB; 128 KiB also covers a core
/// instance a larger payload grew by a page, and guests of two pages; a
/// bigger guest pays page faults above it.
/// wasmtime's `pagemap_scan` (Linux >= 6.7) would reset only the written pages
/// of a larger window, but its one ioctl per instance cost more than the
/// memset here: the core projector took 7.78 µs per `attempt.created` with it
/// (4 MiB window) and 6.88 µs without (docs/BENCHMARKS.md), so it stays off.
const KEEP_RESIDENT: usize = 128 << 10;

/// The wasm stack a guest may use, in bytes: wasmtime's default, set here so
/// that it is a decision rather than an accident of the version. Unbounded
/// recursion traps with `Trap::StackOverflow` (cause `stack_overflow`) when it
/// is used up; how deep a guest gets before that depends on its frame sizes,
/// which are fixed by the component and the pinned wasmtime/cranelift, so the
/// same event fails the same way on every replay. Guest code runs on the
/// calling thread's stack, so that thread needs this much on top of its own
/// use (Rust's spawned threads, rayon's and tokio's blocking ones, have 2 MiB).
pub(crate) const MAX_WASM_STACK: usize = 512 << 10;

/// Builds the engine shared by every projector of a set. `max_memory_bytes` and
/// `max_table_elements` are the largest limits of any projector in the set (the
/// pool's slots must fit them; each store then enforces its own projector's).
///
/// The pooling allocator's size is derived at start ([`pool_slots`]) from
/// those limits, the cgroup memory limit and the cores. Where the pool cannot
/// be set up (its address-space reservation refused, e.g. under a `ulimit -v`
/// or a strict overcommit policy), the engine falls back to the on-demand
/// allocator with a warning: slower instantiation, the same results.
pub(crate) fn engine(
    max_memory_bytes: usize,
    max_table_elements: usize,
) -> wasmtime::Result<Engine> {
    let cgroup_max = cgroup_memory_max();
    let slots = pool_slots(max_memory_bytes, cgroup_max, cores());
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots * CORE_INSTANCES_PER_COMPONENT)
        .total_memories(slots * MEMORIES_PER_COMPONENT)
        .total_tables(slots * TABLES_PER_COMPONENT)
        .total_stacks(slots)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(round_up_to_page(max_memory_bytes))
        .table_elements(max_table_elements)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .pagemap_scan(Enabled::No);

    let mut config = Config::new();
    config
        // Deterministic execution: fuel bounds every run by instruction count,
        // not time; NaN bit patterns are canonical; relaxed SIMD gives the same
        // answer on every CPU. Threads are not compiled into this wasmtime.
        .consume_fuel(true)
        .cranelift_nan_canonicalization(true)
        .wasm_relaxed_simd(true)
        .relaxed_simd_deterministic(true)
        .cranelift_opt_level(OptLevel::Speed)
        .max_wasm_stack(MAX_WASM_STACK)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    match Engine::new(&config) {
        Ok(engine) => {
            tracing::info!(
                slots,
                max_memory_bytes,
                cgroup_memory_max = cgroup_max,
                keep_resident = KEEP_RESIDENT,
                "projection engine: pooling allocator"
            );
            Ok(engine)
        }
        Err(e) => {
            tracing::warn!(
                slots,
                max_memory_bytes,
                cgroup_memory_max = cgroup_max,
                "the projectors' pooling allocator could not be set up ({e:#}); falling back to \
                 the on-demand allocator (same results, slower instantiation; see docs/RUNBOOK.md)"
            );
            config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
            Engine::new(&config)
        }
    }
}

/// The cores this process may run on (1 if the system cannot say): what the
/// pool's slots and the projection pool's threads are sized by.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How many stores the pool holds at once: [`CONCURRENT_STORES`], fewer on
/// a node whose cgroup memory limit could not hold that many guests at their
/// largest memory (at most half the limit for guests), but never fewer than
/// the threads that may call projectors at once (the writer, a rebuild's
/// workers, one per core, and a spare): a call beyond the slots would fail.
pub(crate) fn pool_slots(max_memory_bytes: usize, cgroup_max: Option<u64>, cores: usize) -> u32 {
    let floor = (cores as u32).saturating_add(2).min(CONCURRENT_STORES);
    match cgroup_max {
        None => CONCURRENT_STORES,
        Some(limit) => {
            let per_slot = (max_memory_bytes as u64).max(1) * u64::from(MEMORIES_PER_COMPONENT);
            let by_memory = (limit / 2 / per_slot).min(u64::from(CONCURRENT_STORES)) as u32;
            by_memory.clamp(floor, CONCURRENT_STORES)
        }
    }
}

/// The memory limit of this process's cgroup, read at start: cgroup v2
/// `memory.max`, else v1 `memory.limit_in_bytes`; `None` when unlimited or
/// unknown.
pub(crate) fn cgroup_memory_max() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let v2 = read("/sys/fs/cgroup/memory.max");
    let v1 = || read("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    parse_cgroup_limit(v2.or_else(v1)?.trim())
}

/// `max` (v2) and v1's "unlimited" (a page-rounded i64::MAX) are no limit.
fn parse_cgroup_limit(text: &str) -> Option<u64> {
    let v: u64 = text.parse().ok()?;
    (v < 1 << 60).then_some(v)
}

/// Wasm pages are 64 KiB; the pool wants a whole number of them.
fn round_up_to_page(bytes: usize) -> usize {
    const PAGE: usize = 64 << 10;
    bytes.max(PAGE).div_ceil(PAGE) * PAGE
}

/// The store's resource limiter: wasmtime's `StoreLimits` (which traps on a
/// refused grow) plus a note of whether it was memory that was refused, so a
/// trap can be reported as `memory_limit` rather than a bare trap.
pub(crate) struct Limiter {
    inner: StoreLimits,
    pub(crate) memory_refused: bool,
}

impl Limiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        Limiter {
            inner: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .table_elements(limits.table_elements)
                .instances(limits.instances)
                .trap_on_grow_failure(true)
                .build(),
            memory_refused: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let verdict = self.inner.memory_growing(current, desired, maximum);
        if !matches!(verdict, Ok(true)) {
            self.memory_refused = true;
        }
        verdict
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_refused = true;
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// The version wasmtime-wasi 48 defines the WASI 0.2 interfaces at; a
/// component importing any 0.2.x is linked to it (semver matching).
const WASI_P2_VERSION: &str = "0.2.12";

/// Links the deterministic WASI subset: wasmtime-wasi's WASI 0.2 (sync), with
/// the monotonic clock's timers replaced. wasmtime-wasi's `subscribe-duration`
/// and `subscribe-instant` wait in host time (a tokio sleep on the calling
/// thread, forever for a far deadline): a guest's `sleep` would stall the
/// writer for as long as it asks without spending any fuel, and the host's
/// time would decide when it goes on. Here every timer is ready at once, as
/// if the frozen clock had jumped to the deadline (it still reads the same
/// afterwards): a sleep returns immediately, and a loop waiting for the clock
/// to move runs out of fuel the same way on every replay.
pub(crate) fn add_wasi_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    let mut clock = linker.instance(&format!("wasi:clocks/monotonic-clock@{WASI_P2_VERSION}"))?;
    clock.func_wrap("subscribe-instant", |mut cx, (_when,): (u64,)| {
        Ok((elapsed_timer(cx.data_mut())?,))
    })?;
    clock.func_wrap("subscribe-duration", |mut cx, (_duration,): (u64,)| {
        Ok((elapsed_timer(cx.data_mut())?,))
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A `wasi:io/poll.pollable` that is always ready: a timer whose deadline has
/// passed.
fn elapsed_timer(state: &mut HostState) -> wasmtime::Result<Resource<DynPollable>> {
    let table = state.ctx().table;
    let timer = table.push(ElapsedTimer)?;
    wasmtime_wasi::p2::subscribe(table, timer)
}

struct ElapsedTimer;

#[wasmtime_wasi::async_trait]
impl Pollable for ElapsedTimer {
    async fn ready(&mut self) {}
}

/// Per-store WASI state for a projector that imports WASI.
pub(crate) struct WasiState {
    pub(crate) ctx: WasiCtx,
    pub(crate) table: wasmtime::component::ResourceTable,
    pub(crate) stdout: CapturedOutput,
    pub(crate) stderr: CapturedOutput,
}

impl WasiState {
    /// The deterministic WASI context for one event: the wall clock reads the
    /// event's timestamp, the monotonic clock never moves (and its timers fire
    /// at once: [`add_wasi_to_linker`]), every random source
    /// is derived from the event hash, there are no preopens, no environment,
    /// no arguments, no stdin and no network; stdout/stderr are captured (at
    /// most `output_bytes` each).
    pub(crate) fn new(event_time: Duration, event_hash: &Sha256, output_bytes: usize) -> Self {
        let stdout = CapturedOutput::new(output_bytes);
        let stderr = CapturedOutput::new(output_bytes);
        let mut b = WasiCtxBuilder::new();
        b.stdout(stdout.clone())
            .stderr(stderr.clone())
            .wall_clock(FrozenWallClock(event_time))
            .monotonic_clock(FrozenMonotonicClock)
            .secure_random(DeterministicRng::new(b"wasi:random/random", event_hash))
            .insecure_random(DeterministicRng::new(b"wasi:random/insecure", event_hash))
            .insecure_random_seed(insecure_seed(event_hash))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        WasiState {
            ctx: b.build(),
            table: wasmtime::component::ResourceTable::new(),
            stdout,
            stderr,
        }
    }
}

/// Wall clock stopped at the event's timestamp.
struct FrozenWallClock(Duration);

impl HostWallClock for FrozenWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
    fn now(&self) -> Duration {
        self.0
    }
}

/// Monotonic clock that always reads 0: no guest can measure time.
struct FrozenMonotonicClock;

impl HostMonotonicClock for FrozenMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        0
    }
}

/// `wasi:random/insecure-seed`: the first 16 bytes of a domain-separated hash
/// of the event hash.
fn insecure_seed(event_hash: &Sha256) -> u128 {
    let d = Sha256::of_parts(&[
        b"leviathan/wasi:random/insecure-seed\0",
        event_hash.as_bytes(),
    ]);
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.0[..16]);
    u128::from_be_bytes(b)
}

/// SHA-256 in counter mode over (domain, event hash): a generator whose output
/// is fixed by this code alone, so it stays the same across wasmtime and
/// `rand` upgrades (a `StdRng` is not promised to).
pub(crate) struct DeterministicRng {
    key: [u8; 32],
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl DeterministicRng {
    pub(crate) fn new(domain: &[u8], event_hash: &Sha256) -> Self {
        let key = Sha256::of_parts(&[b"leviathan/", domain, b"\0", event_hash.as_bytes()]).0;
        DeterministicRng {
            key,
            counter: 0,
            block: [0; 32],
            used: 32,
        }
    }

    fn refill(&mut self) {
        self.block = Sha256::of_parts(&[&self.key, &self.counter.to_be_bytes()]).0;
        self.counter += 1;
        self.used = 0;
    }
}

impl rand_core::TryRng for DeterministicRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        let mut filled = 0;
        while filled < dst.len() {
            if self.used == self.block.len() {
                self.refill();
            }
            let n = (dst.len() - filled).min(self.block.len() - self.used);
            dst[filled..filled + n].copy_from_slice(&self.block[self.used..self.used + n]);
            filled += n;
            self.used += n;
        }
        Ok(())
    }
}

/// A guest output stream kept in memory, at most `cap` bytes; the rest is
/// dropped silently (the guest never sees an error, so a chatty projector does
/// not fail because of its logging) and the loss is recorded.
#[derive(Clone)]
pub(crate) struct CapturedOutput {
    cap: usize,
    inner: Arc<Mutex<Captured>>,
}

#[derive(Default)]
pub(crate) struct Captured {
    pub(crate) bytes: Vec<u8>,
    pub(crate) dropped: usize,
}

impl CapturedOutput {
    fn new(cap: usize) -> Self {
        CapturedOutput {
            cap,
            inner: Arc::new(Mutex::new(Captured::default())),
        }
    }

    fn append(&self, data: &[u8]) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.cap.saturating_sub(c.bytes.len());
        let n = room.min(data.len());
        c.bytes.extend_from_slice(&data[..n]);
        c.dropped += data.len() - n;
    }

    /// Takes what was captured so far.
    pub(crate) fn take(&self) -> Captured {
        std::mem::take(&mut *self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// How much the guest may write per `write` call (it always may).
const WRITE_PERMIT: usize = 64 << 10;

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.append(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::Rng;

    #[test]
    fn deterministic_rng_depends_only_on_domain_and_hash() {
        let h = Sha256::of(b"event");
        let mut a = DeterministicRng::new(b"x", &h);
        let mut b = DeterministicRng::new(b"x", &h);
        let mut c = DeterministicRng::new(b"y", &h);
        let mut buf_a = [0u8; 100];
        let mut buf_b = [0u8; 100];
        a.fill_bytes(&mut buf_a);
        b.fill_bytes(&mut buf_b[..7]);
        b.fill_bytes(&mut buf_b[7..]);
        assert_eq!(buf_a, buf_b, "chunking must not change the stream");
        assert_ne!(a.next_u64(), c.next_u64());
    }

    #[test]
    fn captured_output_is_capped() {
        let out = CapturedOutput::new(5);
        out.append(b"hello world");
        out.append(b"!");
        let c = out.take();
        assert_eq!(c.bytes, b"hello");
        assert_eq!(c.dropped, 7);
    }

    #[test]
    fn the_pool_shrinks_to_the_cgroup_limit_but_not_below_the_callers() {
        assert_eq!(pool_slots(64 << 20, None, 2), CONCURRENT_STORES);
        // 8 GiB: room for 32 slots of 2 x 64 MiB in half of it.
        assert_eq!(pool_slots(64 << 20, Some(8 << 30), 2), CONCURRENT_STORES);
        // 1 GiB: half of it holds 4 slots of 2 x 64 MiB.
        assert_eq!(pool_slots(64 << 20, Some(1 << 30), 2), 4);
        // 256 MiB: one slot by memory, but 2 cores + 2 callers need 4.
        assert_eq!(pool_slots(64 << 20, Some(256 << 20), 2), 4);
        assert_eq!(pool_slots(64 << 20, Some(256 << 20), 64), CONCURRENT_STORES);
        assert_eq!(parse_cgroup_limit("max"), None);
        assert_eq!(parse_cgroup_limit("9223372036854771712"), None);
        assert_eq!(parse_cgroup_limit("536870912"), Some(512 << 20));
    }

    #[test]
    fn pages_round_up() {
        assert_eq!(round_up_to_page(1), 64 << 10);
        assert_eq!(round_up_to_page(64 << 20), 64 << 20);
        assert_eq!(round_up_to_page((64 << 10) + 1), 128 << 10);
    }
}
