// The training commands' own flags (pretrain, sft, reward: --threads, --out, --checkpoint-every, …), each
// declared once with its default and why (Support/Settings.swift): the launcher builds the flags, their help
// and the TrainOptions it passes the Trainer from this list, so a default is stated nowhere else on the
// command line's side, and TrainOptions' own initial values (Trainer.swift) read it.
//
// What this is not: the config file's keys (Configuration's TrainSettings), or what the options do.
import Checkpoint
import Support

extension TrainOptions {
    public static let settings = SettingsBlock<TrainOptions>(
        "options",
        [
            .flag(
                "threads", \.threads, 1, because: "one core per rank, as mpirun places ranks", .int(min: 1, max: 4096),
                help: "threads per rank: BLAS, oneDNN, attention and row-wise kernels"),
            .flag(
                "out", \.outputDirectory, nil, because: "no model is written", placeholder: "DIR",
                help: "write the final model here (Hugging Face layout) when the schedule completes"),
            .flag(
                "out-dtype", \.outputDType, "fp32",
                because: "the training precision: --out compares with the run itself",
                .choice(["fp32", "bf16", "fp16"]), help: "the format of --out's weights (export defaults to bf16)"),
            .flag(
                "max-shard-size", \.maxShardSize, "5GB", because: "Hugging Face's default shard size",
                placeholder: "SIZE",
                help: "above this, --out splits the weights into model-0000k-of-0000n.safetensors with an index"),
            .flag(
                "metrics", \.metricsPath, nil, because: "no metrics file", placeholder: "FILE.jsonl",
                help: "one JSON object per step; appended to on resume"),
            .flag(
                "log-every", \.logEvery, 1, because: "small runs are short; raise it for long ones",
                .int(min: 1, max: Int.max), help: "progress line every N steps"),
            .flag(
                "eval-every", \.evalEvery, 0, because: "a validation loss at the end, where the config gives windows",
                .int(min: 0, max: Int.max),
                help: "the validation loss (train.eval_data or eval_holdout) every N steps and at the end"),
            .flag(
                "checkpoint-dir", \.checkpointDirectory, nil, because: "no checkpoints, nothing resumed",
                placeholder: "DIR", help: "sharded checkpoints go here, and are resumed from"),
            .flag(
                "checkpoint-every", \.checkpointEvery, 0, because: "only at the end, on preemption and at --stop-after",
                .int(min: 0, max: Int.max), help: "save every N steps; 0 saves only at the end and when stopped"),
            .flag(
                "checkpoint-every-minutes", \.checkpointEveryMinutes, 0,
                because: "saves by step count only (--checkpoint-every)",
                .number(min: 0, inclusive: true, max: 1e7), placeholder: "M",
                help:
                    "also save when M minutes have passed since the last save (rank 0's clock decides, at a step's end)"
            ),
            .flag(
                "signal-lead", \.signalLead, 0, because: "the scheduler's lead is not known",
                .number(min: 0, inclusive: true, max: 1e7), placeholder: "SECONDS",
                help:
                    "seconds between the scheduler's signal and its kill (--signal=USR1@S): warns when one micro-step and a save do not fit"
            ),
            .flag(
                "keep", \.keepCheckpoints, 2, because: "the fewest that survive a torn newest",
                .int(min: 2, max: 1_000_000), placeholder: "K",
                help: "committed checkpoints kept; never fewer than 2, since a torn newest needs a predecessor"),
            .flag(
                "no-prefetch", \.noPrefetch, false,
                because: "a unit gathered behind the previous one's compute is mostly hidden",
                help:
                    "sharding full: gather each unit on the compute thread when it is needed, not ahead on a "
                    + "communication thread (the same results; faster where a collective beside compute is slow, as "
                    + "on 2 ranks of the network lab)"),
            .flag(
                "background-save", \.backgroundSave, false,
                because: "no second copy of the state in memory; the step waits for the write",
                help: "write checkpoints on a thread while training goes on"),
            .flag(
                "resume", \.resumeArgument, "auto", because: "the newest checkpoint that verifies",
                placeholder: "auto|none|PATH",
                help: "where to resume from: the newest that verifies, none (start fresh), or this checkpoint"),
            .flag(
                "stop-after", \.stopAfter, nil, because: "the schedule runs to its end", .int(min: 1, max: Int.max),
                help: "stop with a checkpoint after step N (exit code 75)"),
            .flag(
                "collective-timeout", \.collectiveTimeout, 300, because: "far above any healthy step's wait",
                .number(min: 0, inclusive: true, max: 1e7), placeholder: "SECONDS",
                help: "abort the job when a collective waits this long (0 disables the watchdog)"),
        ])

    /// `resume` as the command line writes it: auto, none or a path.
    public var resumeArgument: String {
        get {
            switch resume {
            case .auto: "auto"
            case .none: "none"
            case let .path(path): path
            }
        }
        set { resume = ResumeMode(newValue) }
    }
}
