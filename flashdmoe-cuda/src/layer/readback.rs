//! What the kernel leaves behind after a forward, read back by the host: the ranks' control
//! words ([`PhaseTimes`]), the trace and its in-task marks ([`TaskMarks`]), and the
//! diagnostics record turned into a [`TimeoutReport`].

use std::sync::{Arc, PoisonError};

use cudarc::driver::CudaStream;
use flashdmoe_core::{BackendError, TimeoutReport, TraceEvent};
use flashdmoe_proto::TaskCounts;

use super::{CudaLayer, Gpu, Plan, u32s, word_pair};
use crate::params::{Diag, ROLES, TraceRecord, WAITS, control};

/// Where one rank's forward spent its time, in nanoseconds since its GPU's kernel started:
/// marks the kernel records as it goes (`kernels/heap.cuh`, `Control`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhaseTimes {
    /// Router GEMM done (A1, after the grid barrier).
    pub routed_ns: u32,
    /// Every token's slots chosen: A2's first half, a warp a token, after its grid barrier; or,
    /// where a thread routes a token (small routers at large T: topk.cuh `lanes_route`), the
    /// latest block to route its chunk (no barrier follows; its chunk counts follow in the same
    /// block).
    pub tokens_ns: u32,
    /// Top-k and within-chunk positions done (A2).
    pub chosen_ns: u32,
    /// Placement and capacity drops done (A3).
    pub placed_ns: u32,
    /// The last of this rank's dispatch signals raised (A4 done for this rank's packets; on the
    /// Hopper engine the OS block raises the signals of the packets read in place after it
    /// enqueued the rank's own: then this mark follows the first wave's tasks).
    pub dispatched_ns: u32,
    /// The scheduler's first round that handed out tasks (0 if none did: every task was in
    /// the first wave). After the first wave, the earliest a processor's second task reached
    /// its mailbox.
    pub first_handout_ns: u32,
    /// Every task of the rank completed: the scheduler hands out the stop words.
    pub stopped_ns: u32,
    /// The last warp of the rank's blocks ended (what the kernel ran on after its tasks:
    /// `exited_ns - stopped_ns`; the rest of a launch's time is the launch itself).
    pub exited_ns: u32,
    /// The last block of the launch started (nanoseconds after block 0 did; rank 0's word,
    /// the same for every rank of the GPU).
    pub last_block_ns: u64,
    /// The last block done with its share of the counter reset (the same way).
    pub reset_ns: u64,
    /// The last block done with its router GEMM jobs, before A1's grid barrier (the same way).
    pub router_jobs_ns: u64,
    /// Whether A2 routed a token a thread (small routers at large T: topk.cuh `lanes_route`)
    /// rather than a warp a token.
    pub tokens_by_threads: bool,
    /// The first wave: GEMM0 tasks of the packets read in place that the OS block posted in
    /// processors' mailboxes itself, one each, before the scheduler's first round
    /// (subscriber.cuh `enqueue_in_place`; 0 where no packet is read in place: the mma.sync
    /// engine, or a rank with no such rows).
    pub first_wave: u32,
    /// When the first wave was in the processors' mailboxes (the latest warp done posting its
    /// share; 0 with no first wave).
    pub wave_posted_ns: u32,
    /// The second wave: GEMM1 tasks the OS block posted as task number 1 of the first wave's
    /// processors, where every GEMM0 task of a one-GPU layer was in the first wave
    /// (subscriber.cuh `post_gemm1_early`; 0 otherwise).
    pub second_wave: u32,
    /// The third wave: combine tasks the OS block wrote with the second wave, processor q
    /// below their count taking combine q as its task number 2 once its first task is done,
    /// where every combine has such a processor (subscriber.cuh `post_combines`; 0 otherwise).
    pub third_wave: u32,
    /// A return subscriber's last publication of combine tasks (0 with no combine).
    pub combines_queued_ns: u32,
    /// The scheduler's last round that handed combine tasks out (0 with no combine).
    pub combines_handed_ns: u32,
    /// Tasks run as halves of a 2-CTA cluster's pair (`CudaOptions::pairs`; twice the pairs
    /// run: the scheduler gives a pair no cluster can take as two solo tasks); 0 unpaired.
    pub paired_tasks: u32,
    /// Routing chunks the streamed placement placed (experiment `FDM_STREAM`, placer.cuh: the
    /// first processors route and place chunk by chunk, no waves); 0 where the forward did not
    /// stream (the other phase marks then keep their meaning).
    pub chunks_placed: u32,
    /// The streamed placement's first row tile queued (0 where it did not stream).
    pub first_tile_ns: u32,
}

/// Where the time of one task of a traced forward went, from the kernel's trace record
/// ([`CudaLayer::task_marks`]; Hopper engine only: the mma.sync engine and combines in
/// registers mark nothing). Two marks after the task's start, in order, whose meaning is the
/// task's kind (`key.0`):
/// * a GEMM task: `mark1_ns` its main loop's end as consumer warpgroup 0 saw it, `mark2_ns`
///   its results stored, before their fences and publication;
/// * a streamed combine: `mark1_ns` its slot table looked up and handed to the producer,
///   `mark2_ns` its first fill of returned rows landed in shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskMarks {
    /// The executing rank.
    pub rank: u32,
    /// The task ([`TraceEvent::key`]).
    pub key: flashdmoe_proto::TaskKey,
    /// Its start to its end (ns): its trace event's duration.
    pub duration_ns: u64,
    /// Its start to its first mark (ns).
    pub mark1_ns: u32,
    /// Its start to its second mark (ns).
    pub mark2_ns: u32,
}

impl CudaLayer {
    /// Control words of local rank `local` of GPU `gpu` after its last forward.
    pub(super) fn control(&self, gpu: &Gpu, local: u32) -> Result<Vec<u32>, BackendError> {
        let stream = gpu.device.stream().clone();
        let at = (local as u64 * self.plan.scratch_bytes + self.plan.scratch.control) as usize;
        let bytes = stream
            .clone_dtoh(&gpu.scratch.slice(at..at + 4 * crate::params::CONTROL_WORDS as usize))
            .map_err(|e| BackendError::Device(e.to_string()))?;
        Ok(u32s(&bytes))
    }

    /// `%globaltimer` at the launch of GPU `gpu`'s last forward.
    pub(super) fn kernel_start(&self, gpu: &Gpu) -> Result<u64, BackendError> {
        Ok(word_pair(&self.control(gpu, 0)?, control::KERNEL_START))
    }

    /// Where the last forward's phase A time went, per rank (see [`PhaseTimes`]).
    pub fn phase_times(&self) -> Result<Vec<PhaseTimes>, BackendError> {
        let mut out = Vec::with_capacity(self.plan.config.world as usize);
        for gpu in &self.gpus {
            let gpu = gpu.lock().unwrap_or_else(PoisonError::into_inner);
            // Rank 0's words hold the GPU's kernel start and the raw-timer maxima.
            let first = self.control(&gpu, 0)?;
            let since_start = |w: usize| {
                word_pair(&first, w).saturating_sub(word_pair(&first, control::KERNEL_START))
            };
            let (last_block, reset, router_jobs) = (
                since_start(control::LAST_BLOCK_START),
                since_start(control::LAST_RESET_DONE),
                since_start(control::LAST_ROUTER_DONE),
            );
            for local in 0..self.plan.ranks_per_gpu {
                let c = self.control(&gpu, local)?;
                out.push(PhaseTimes {
                    routed_ns: c[control::ROUTED_NS],
                    tokens_ns: c[control::TOKENS_NS],
                    chosen_ns: c[control::CHOSEN_NS],
                    placed_ns: c[control::PLACED_NS],
                    dispatched_ns: c[control::DISPATCHED_NS],
                    first_handout_ns: c[control::FIRST_HANDOUT_NS],
                    stopped_ns: c[control::STOPPED_NS],
                    exited_ns: c[control::EXIT_NS],
                    last_block_ns: last_block,
                    reset_ns: reset,
                    router_jobs_ns: router_jobs,
                    tokens_by_threads: c[control::ROUTE_THREADS] != 0,
                    first_wave: c[control::FIRST_WAVE],
                    wave_posted_ns: c[control::WAVE_POSTED_NS],
                    second_wave: c[control::SECOND_WAVE],
                    third_wave: c[control::THIRD_WAVE],
                    combines_queued_ns: c[control::COMBINES_QUEUED_NS],
                    combines_handed_ns: c[control::COMBINES_HANDED_NS],
                    paired_tasks: c[control::PAIRED_TASKS],
                    chunks_placed: c[control::CHUNKS_PLACED],
                    first_tile_ns: c[control::FIRST_TILE_NS],
                });
            }
        }
        Ok(out)
    }

    pub(super) fn read_trace(
        &self,
        gpu: &Gpu,
        stream: &Arc<CudaStream>,
        local: u32,
        counts: TaskCounts,
    ) -> Result<Vec<TraceEvent>, BackendError> {
        let plan = &self.plan;
        let d = |e: cudarc::driver::DriverError| BackendError::Device(e.to_string());
        let s0 = local as u64 * plan.scratch_bytes;
        let read = |offset: u64, len: u64| -> Result<Vec<u8>, BackendError> {
            stream
                .clone_dtoh(
                    &gpu.scratch.slice((s0 + offset) as usize..(s0 + offset + len) as usize),
                )
                .map_err(d)
        };
        // Times count from the launch of this GPU's kernel on this GPU's `%globaltimer`, a
        // clock of its own (`trace_clocks`): conformance aligns the GPUs' clocks.
        let origin = self.kernel_start(gpu)?;
        // The task log's two parts (`kernels/queue.cuh`): this forward's combines from slot 0,
        // its GEMM tasks from the combine log's end.
        let record_bytes = std::mem::size_of::<TraceRecord>() as u64;
        let gemm_base = flashdmoe_proto::graph::combine_log_slots(&plan.layout);
        let gemms = counts.gemm0 + counts.gemm1;
        let mut tasks = read(plan.scratch.tasks, counts.combine * 64)?;
        tasks.extend(read(plan.scratch.tasks + gemm_base * 64, gemms * 64)?);
        let mut records = read(plan.scratch.trace, counts.combine * record_bytes)?;
        records.extend(read(plan.scratch.trace + gemm_base * record_bytes, gemms * record_bytes)?);
        let rank = gpu.first_rank + local;
        let count = counts.total();
        let mut events = Vec::with_capacity(count as usize);
        let mut marks = Vec::new();
        for i in 0..count as usize {
            let t = flashdmoe_proto::TaskDescriptor::decode(&tasks[i * 64..][..64], &plan.layout)?;
            let rec = &records[i * record_bytes as usize..][..record_bytes as usize];
            let word = |o: usize| u64::from_le_bytes(rec[o..o + 8].try_into().expect("8 bytes"));
            let half = |o: usize| u32::from_le_bytes(rec[o..o + 4].try_into().expect("4 bytes"));
            let processor = half(16);
            let event = TraceEvent {
                rank,
                processor,
                kind: t.task_kind()?,
                source: t.source_rank,
                owner: t.owner_rank,
                local_expert: t.local_expert,
                row_tile: t.row_tile,
                col_tile: t.col_tile,
                start_ns: word(0).saturating_sub(origin),
                end_ns: word(8).saturating_sub(origin),
            };
            let (mark1_ns, mark2_ns) = (half(24), half(28));
            if mark2_ns != 0 {
                marks.push(TaskMarks {
                    rank,
                    key: event.key(),
                    duration_ns: event.end_ns.saturating_sub(event.start_ns),
                    mark1_ns,
                    mark2_ns,
                });
            }
            events.push(event);
        }
        let mut all = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = all.get_mut(rank as usize) {
            *slot = marks;
        }
        Ok(events)
    }

    /// The in-task marks of every GEMM task and streamed combine of each rank's last traced
    /// forward (Hopper engine; empty before any traced forward, or on the mma.sync engine).
    pub fn task_marks(&self) -> Vec<TaskMarks> {
        self.marks.lock().unwrap_or_else(PoisonError::into_inner).concat()
    }
}

pub(super) fn bytemuck_diag(bytes: &[u8]) -> Diag {
    let w = |i: usize| u32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
    Diag {
        status: w(0),
        abort: w(1),
        rank: w(2),
        role: w(3),
        what: w(4),
        index: w(5),
        expected_epoch: w(6),
        pad: w(7),
        seen: u64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes")),
    }
}

pub(super) fn timeout_report(diag: &Diag, plan: &Plan) -> TimeoutReport {
    let role = ROLES.get(diag.role as usize).map_or("unknown role", |r| r.1);
    let what = WAITS.get(diag.what as usize).map_or("unknown condition", |w| w.1);
    let g = plan.layout.geometry();
    let detail = match diag.what {
        0 => format!(
            "{what} from rank {} for local expert {}",
            diag.index / g.local_experts.max(1),
            diag.index % g.local_experts.max(1)
        ),
        _ => format!("{what} #{}", diag.index),
    };
    TimeoutReport {
        rank: diag.rank,
        role: role.to_owned(),
        awaited: detail,
        expected_epoch: diag.expected_epoch,
        seen: diag.seen,
    }
}
