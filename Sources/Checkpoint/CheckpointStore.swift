// CheckpointStore: saving and resuming sharded checkpoints of a stage's models (layout and commit protocol
// in Manifest.swift).
//
// Saving copies this rank's pieces of parameters and moments (what its partition gives it) into a staging
// buffer (the only stall when writing in the background), then writes, fsyncs and commits on a thread with
// its own communicator. Resuming picks the newest checkpoint that verifies (each rank hashes every
// world-size-th shard; a failure anywhere skips the checkpoint on all ranks), reads on each rank only the
// byte ranges of the old shards that overlap the pieces it now holds, and assembles a replicated buffer from
// every rank's flat range with an allgather: the world size and the sharding mode may change.

import Configuration
import Distributed
import Foundation
import Model
import Optim
import Support

public enum ResumeMode: Equatable, Sendable {
    case auto, none, path(String)

    public init(_ text: String) {
        switch text {
        case "auto": self = .auto
        case "none": self = .none
        default: self = .path(text)
        }
    }
}

/// One model of a checkpoint: its name (the manifest's), the model, its optimizer when it trains, and the
/// partition whose pieces each rank writes.
public struct CheckpointedModel {
    public let name: String
    public let model: LlamaModel
    public let optimizer: AdamW?
    public let partition: UnitPartition

    public init(name: String, model: LlamaModel, optimizer: AdamW?, partition: UnitPartition) {
        (self.name, self.model, self.optimizer, self.partition) = (name, model, optimizer, partition)
    }

    /// The buffers a checkpoint holds, each with what it holds: parameters, then AdamW's m and v.
    var state: [(FloatBuffer, HeldPieces)] {
        [(model.parameters, model.parameterPieces)]
            + (optimizer.map { [($0.m, $0.pieces), ($0.v, $0.pieces)] } ?? [])
    }

    /// Whether the shards list their pieces (a partition of several units over several ranks).
    var writesPieces: Bool { partition.units.count > 1 && partition.ranks > 1 }
}

/// One model's shard as staged for writing: its file prefix, whose pieces it holds, and the bytes.
struct Staged: Sendable {
    let prefix: String
    let partition: UnitPartition
    let writesPieces: Bool
    /// The buffer's sections end to end, of equal length: parameters, then m and v for a trained model.
    let sections: Int
    let buffer: FloatBuffer
}

public final class CheckpointStore: @unchecked Sendable {
    public let directory: String
    public let keep: Int
    public let background: Bool
    /// What this run trains; a checkpoint of another stage is never resumed.
    public let stage: TrainingStage
    let world: Communicator
    let commitComm: Communicator
    private var pending: Thread?
    private let done = NSCondition()
    private var pendingFinished = true
    private var pendingError: Error?
    private var finishedCommit: Double?
    private let log: (String) -> Void
    /// Rank 0's hold on the directory for this job's life (DirectoryLock.swift).
    private var lock: DirectoryLock?

    public init(
        directory: String, stage: TrainingStage, keep: Int, background: Bool, world: Communicator,
        log: @escaping (String) -> Void
    ) throws {
        self.directory = directory
        self.stage = stage
        self.keep = max(keep, 2)  // never prune to one: a torn newest checkpoint must have a predecessor
        // A background commit needs MPI on two threads at once.
        self.background = background && (world.size == 1 || world.threadLevel >= 3)
        self.world = world
        commitComm = try world.duplicate()
        self.log = log
        // Fail fast: a directory that cannot be written is found now, not after the first hour of training.
        do {
            try AtomicFile.checkWritable(directory: directory)
        } catch let error as FileError {
            throw FileError(
                path: directory,
                message: "the checkpoint directory is not writable on rank \(world.rank): \(error.message)")
        }
        // One job per directory: rank 0 takes the lock and every rank learns whether it could.
        var refusal: Error?
        if world.isRoot {
            do { lock = try DirectoryLock(directory: directory, log: log) } catch { refusal = error }
        }
        if lock != nil {  // the directory is this job's now: a killed predecessor's temporaries can go
            AtomicFile.removeStaleTemporaries(in: directory, log: log)
            for step in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            where step.hasPrefix("step-") {
                AtomicFile.removeStaleTemporaries(in: directory + "/" + step, log: log)
            }
        }
        if try world.allreduceMax(refusal == nil ? 0 : 1) > 0 {
            throw refusal
                ?? CheckpointError.incompatible(
                    file: directory, reason: "rank 0 could not take the directory's lock (its message says why)")
        }
    }

    // MARK: - Saving

    /// Saves the state of every model after `step` optimizer steps (the primary first); returns the seconds
    /// training stalled for it.
    @discardableResult
    public func save(step: Int, tokensSeen: Int, models: [CheckpointedModel], config: RunConfig) throws -> Double {
        try waitForPending()
        let start = Date()
        // Each rank writes its partition's pieces of every buffer; sharded buffers hold exactly those, replicated
        // ones all.
        let staged: [Staged] = models.enumerated().map {
            i, entry in
            let state = entry.state
            let mine = entry.partition.held(rank: world.rank)
            let buffer = FloatBuffer(count: state.count * mine.count)
            for (section, (source, held)) in state.enumerated() {
                let target = buffer.pointer + section * mine.count
                if held.isWhole(of: entry.model.layout.count) {
                    for piece in mine.pieces {
                        (target + piece.local).update(
                            from: source.pointer + piece.range.lowerBound, count: piece.range.count)
                    }
                } else {
                    precondition(held == mine, "rank \(world.rank) holds neither everything nor its own pieces")
                    target.update(from: source.pointer, count: mine.count)
                }
            }
            return Staged(
                prefix: i == 0 ? "" : entry.name + "-", partition: entry.partition, writesPieces: entry.writesPieces,
                sections: state.count, buffer: buffer)
        }
        let checkpoint = directory + "/" + CheckpointManifest.directoryName(step: step)
        let primary = models[0]
        var template = CheckpointManifest(
            stage: stage, step: step, tokensSeen: tokensSeen, nextBatch: step, adamStep: primary.optimizer?.step ?? 0,
            worldSize: world.size,
            parameterCount: primary.model.layout.count,
            layoutSHA256: CheckpointManifest.layoutHash(primary.model.layout), seed: config.train.seed,
            config: config, shards: [], savedAt: ISO8601DateFormatter().string(from: Date()))
        if models.count > 1 {
            // Format 3 only where it is needed: a checkpoint of one model stays readable by earlier builds.
            template.formatVersion = 3
            template.modelName = primary.name
        }
        if models.contains(where: \.writesPieces) { template.formatVersion = 4 }
        if models.count > 1 {
            template.models = models.dropFirst().map {
                .init(
                    name: $0.name, model: $0.model.config, parameterCount: $0.model.layout.count,
                    layoutSHA256: CheckpointManifest.layoutHash($0.model.layout), adamStep: $0.optimizer?.step,
                    sections: $0.state.count, shards: [])
            }
        }
        let bytes = staged.reduce(0) { $0 + $1.buffer.byteCount }
        let manifest = template
        let stall = Date().timeIntervalSince(start)
        let work: @Sendable () throws -> Void = { [self] in
            let t0 = Date()
            try self.commit(staged: staged, checkpoint: checkpoint, manifest: manifest)
            self.done.withLock { self.finishedCommit = Date().timeIntervalSince(start) }
            if self.world.isRoot {
                self.log(
                    String(
                        format:
                            "checkpoint %@ committed: %.1f MB per rank written in %.2f s%@, training stalled %.0f ms",
                        checkpoint, Double(bytes) / 1e6, Date().timeIntervalSince(t0),
                        self.background ? " in the background" : "",
                        (self.background ? stall : Date().timeIntervalSince(start)) * 1e3))
            }
        }
        guard background else {
            try work()
            return Date().timeIntervalSince(start)
        }
        done.lock()
        pendingFinished = false
        done.unlock()
        let thread = Thread { [self] in
            var failure: Error?
            do { try work() } catch { failure = error }
            self.done.lock()
            self.pendingError = failure
            self.pendingFinished = true
            self.done.broadcast()
            self.done.unlock()
        }
        thread.name = "checkpoint"
        pending = thread
        thread.start()
        return stall
    }

    /// The seconds the newest committed save took from start to commit, once: nil until one commits and after
    /// it has been taken (a background save's is known when it finishes).
    public func takeCommitSeconds() -> Double? {
        done.withLock {
            defer { finishedCommit = nil }
            return finishedCommit
        }
    }

    /// Gives the directory's lock back (the end of the run); saving after this is a programmer error.
    public func releaseDirectory() { lock = nil }

    /// Waits for a background save to commit; rethrows its error.
    public func waitForPending() throws {
        guard pending != nil else { return }
        done.lock()
        while !pendingFinished { done.wait() }
        let error = pendingError
        pendingError = nil
        done.unlock()
        pending = nil
        if let error { throw error }
    }

    private func commit(
        staged: [Staged], checkpoint: String,
        manifest template: CheckpointManifest
    ) throws {
        try FileManager.default.createDirectory(atPath: checkpoint, withIntermediateDirectories: true)
        // Per shard, 64 hex digits for the whole file, then 64 for each section (a parameters-only reader
        // verifies just what it reads), computed in one pass.
        var words: [Int32] = []
        for entry in staged {
            let name = entry.prefix + CheckpointManifest.shardName(rank: world.rank, worldSize: world.size)
            let bytes = UnsafeRawBufferPointer(start: entry.buffer.pointer, count: entry.buffer.byteCount)
            var whole = SHA256()
            var sectionHashes: [String] = []
            let sectionBytes = entry.buffer.byteCount / entry.sections
            for k in 0..<entry.sections {
                let section = UnsafeRawBufferPointer(rebasing: bytes[(k * sectionBytes)..<((k + 1) * sectionBytes)])
                var one = SHA256()
                one.update(section)
                whole.update(section)
                sectionHashes.append(one.hexDigest())
            }
            words += Array((whole.hexDigest() + sectionHashes.joined()).utf8).map(Int32.init)
            try AtomicFile.write(to: checkpoint + "/" + name) { writer in
                try writer.write(bytes)
                // The tests' seam: this rank may die here, its shard written but not committed.
                FaultInjection.shardWritten?(world.rank)
            }
        }
        // The gather is the barrier of the protocol: rank 0 hears from every rank only after its shards are durable.
        guard let all = try commitComm.gather(words) else { return }
        let firstWord = staged.reduce(into: [0]) { $0.append($0.last! + 64 * (1 + $1.sections)) }
        func hash(_ rank: Int, _ model: Int, section: Int? = nil) -> String {
            let start = firstWord[model] + 64 * (section.map { $0 + 1 } ?? 0)
            return String(decoding: all[rank][start..<(start + 64)].map(UInt8.init), as: UTF8.self)
        }
        func sectionHashes(_ rank: Int, _ model: Int) -> [String] {
            (0..<staged[model].sections).map { hash(rank, model, section: $0) }
        }
        func shards(_ model: Int, sections: Int) -> [CheckpointManifest.Shard] {
            let entry = staged[model]
            return (0..<world.size).map { rank in
                let file = entry.prefix + CheckpointManifest.shardName(rank: rank, worldSize: world.size)
                guard entry.writesPieces else {
                    let r = CheckpointManifest.range(rank: rank, worldSize: world.size, count: entry.partition.count)
                    return .init(
                        file: file, rank: rank, start: r.lowerBound, end: r.upperBound, bytes: 4 * sections * r.count,
                        sha256: hash(rank, model), sectionSHA256: sectionHashes(rank, model))
                }
                let held = entry.partition.held(rank: rank)
                return .init(
                    file: file, rank: rank, start: held.ranges.first?.lowerBound ?? 0,
                    end: held.ranges.last?.upperBound ?? 0, bytes: 4 * sections * held.count,
                    sha256: hash(rank, model), pieces: held.ranges.map { [$0.lowerBound, $0.upperBound] },
                    sectionSHA256: sectionHashes(rank, model))
            }
        }
        var manifest = template
        manifest.shards = shards(0, sections: 3)
        for (i, extra) in (template.models ?? []).enumerated() {
            manifest.models![i].shards = shards(i + 1, sections: extra.sections)
        }
        try AtomicFile.write(try manifest.sealed(), to: checkpoint + "/manifest.json")
        prune(committed: checkpoint, step: manifest.step)
    }

    /// Keeps the newest `keep` committed checkpoints by manifest step, and always the one just committed;
    /// removes older ones and uncommitted leftovers of earlier steps.
    private func prune(committed newest: String, step: Int) {
        var kept = 0
        for old in committedCheckpoints(in: directory) {
            if old == newest || kept < keep - 1 {
                if old != newest { kept += 1 }
                continue
            }
            try? FileManager.default.removeItem(atPath: old)
        }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names
        where name.hasPrefix("step-") && (Int(name.dropFirst(5)) ?? Int.max) < step
            && !FileManager.default.fileExists(atPath: "\(directory)/\(name)/manifest.json")
        {
            try? FileManager.default.removeItem(atPath: "\(directory)/\(name)")
        }
    }

    /// Moves the committed checkpoints newer than the one this run continues from (all of them when it starts
    /// fresh) out of `--resume auto`'s way, keeping them: a later launch must continue this run, not the one
    /// it abandoned. Rank 0 renames; the others wait.
    private func setAsideNewerThan(_ step: Int?) throws {
        if world.isRoot {
            let stamp = Int(Date().timeIntervalSince1970)
            for checkpoint in committedCheckpoints(in: directory) {
                let theirs =
                    (try? readManifest(checkpoint).step) ?? Int(
                        ((checkpoint as NSString).lastPathComponent).dropFirst(5)) ?? Int.max
                guard step.map({ theirs > $0 }) ?? true else { continue }
                let name = (checkpoint as NSString).lastPathComponent
                let aside = "\(directory)/abandoned-\(stamp)-\(name)"
                try FileManager.default.moveItem(atPath: checkpoint, toPath: aside)
                log(
                    "set aside \(checkpoint) as \(aside): this run continues from \(step.map { "step \($0)" } ?? "a fresh start"), so --resume auto must not return to it"
                )
            }
        }
        try world.barrier()
    }

    // MARK: - Resuming

    /// Loads the checkpoint `mode` selects into the model and optimizer; nil when starting fresh. Newer
    /// checkpoints than the one resumed (all, when starting fresh) are then set aside, said in the log.
    public func resume(_ mode: ResumeMode, models: [CheckpointedModel], config: RunConfig) throws -> CheckpointManifest?
    {
        let manifest = try select(mode, models: models, config: config)
        try setAsideNewerThan(manifest?.step)
        return manifest
    }

    private func select(
        _ mode: ResumeMode, models: [CheckpointedModel], config: RunConfig
    ) throws -> CheckpointManifest? {
        let candidates: [String]
        switch mode {
        case .none: return nil
        case .auto: candidates = committedCheckpoints(in: directory)
        case let .path(p): candidates = [p]
        }
        for checkpoint in candidates {
            do {
                let start = Date()
                let manifest = try readManifest(checkpoint)
                try checkCompatible(manifest, checkpoint: checkpoint, models: models, config: config)
                var failures = 0.0
                let every = manifest.shards + (manifest.models ?? []).flatMap(\.shards)
                for (i, shard) in every.enumerated() where i % world.size == world.rank {
                    do { try verifyShard(shard, in: checkpoint) } catch {
                        FileHandle.standardError.write(Data("[rank \(world.rank)] \(error)\n".utf8))
                        failures += 1
                    }
                }
                if try world.allreduceSum(failures) > 0 {
                    throw CheckpointError.verificationFailed(checkpoint: checkpoint)
                }
                var failure = load(
                    manifest.shards, count: manifest.parameterCount, sections: 3, from: checkpoint, into: models[0])
                models[0].optimizer?.step = manifest.adamStep
                for (entry, extra) in zip(models.dropFirst(), manifest.models ?? []) {
                    failure =
                        failure
                        ?? load(
                            extra.shards, count: extra.parameterCount, sections: extra.sections, from: checkpoint,
                            into: entry)
                    if let step = extra.adamStep { entry.optimizer?.step = step }
                }
                // A read that failed on one rank after the shards verified: every rank leaves this checkpoint
                // together, or the others would go on to collectives that rank never joins.
                if let failure { FileHandle.standardError.write(Data("[rank \(world.rank)] \(failure)\n".utf8)) }
                if try world.allreduceSum(failure == nil ? 0 : 1) > 0 {
                    throw (failure as? CheckpointError) ?? CheckpointError.verificationFailed(checkpoint: checkpoint)
                }
                if world.isRoot {
                    log(
                        String(
                            format:
                                "resumed from %@ (step %d, saved on %d rank(s), now %d), verified and loaded in %.2f s",
                            checkpoint, manifest.step, manifest.worldSize, world.size, Date().timeIntervalSince(start)))
                }
                return manifest
            } catch let error as CheckpointError {
                if case .incompatible = error { throw error }
                guard mode == .auto else { throw error }
                if world.isRoot { log("skipping \(checkpoint): \(error); falling back to the previous checkpoint") }
            }
        }
        if mode == .auto && world.isRoot {
            log(
                candidates.isEmpty
                    ? "no checkpoint in \(directory): starting fresh"
                    : "no checkpoint in \(directory) verifies: starting fresh")
        }
        return nil
    }

    private func checkCompatible(
        _ m: CheckpointManifest, checkpoint: String, models: [CheckpointedModel], config: RunConfig
    ) throws {
        let model = models[0].model
        func refuse(_ reason: String) -> CheckpointError {
            .incompatible(file: checkpoint + "/manifest.json", reason: reason)
        }
        guard m.stage == stage else {
            throw refuse(
                "it holds a \(m.stage.rawValue) run's checkpoint and this is \(stage.rawValue): give \(stage.rawValue) its own --checkpoint-dir, and start from this checkpoint with finetune.init_from"
            )
        }
        guard m.parameterCount == model.layout.count, m.layoutSHA256 == CheckpointManifest.layoutHash(model.layout),
            m.config.model == config.model
        else {
            throw refuse("it holds another model (\(m.parameterCount) parameters); the config's model block must match")
        }
        guard m.config.train.globalBatchTokens == config.train.globalBatchTokens,
            m.config.train.seqLen == config.train.seqLen,
            m.config.train.seed == config.train.seed
        else {
            throw refuse(
                "global_batch_tokens, seq_len and seed must stay the same for the data to continue where it stopped")
        }
        let saved = (m.models ?? []).map(\.name), wanted = models.dropFirst().map(\.name)
        guard saved == wanted, (m.modelName ?? "model") == models[0].name || m.models == nil else {
            throw refuse(
                "it holds the models \([m.modelName ?? "model"] + saved) and this stage has \(models.map(\.name))")
        }
        for (entry, extra) in zip(models.dropFirst(), m.models ?? []) {
            guard extra.parameterCount == entry.model.layout.count,
                extra.layoutSHA256 == CheckpointManifest.layoutHash(entry.model.layout),
                extra.model == entry.model.config, extra.sections == entry.state.count
            else {
                throw refuse(
                    "its model \(extra.name) is another model (\(extra.parameterCount) parameters, \(extra.sections == 3 ? "trained" : "frozen")) than this stage's"
                )
            }
        }
    }

    /// Reads into each of a model's buffers what this rank now holds of it, from the old shards that overlap:
    /// a sharded buffer's own pieces directly; a replicated one's flat range of this world, then an allgather.
    /// Returns the first read error rather than throwing it, after taking part in every collective anyway.
    private func load(
        _ shards: [CheckpointManifest.Shard], count: Int, sections: Int, from checkpoint: String,
        into entry: CheckpointedModel
    ) -> Error? {
        var failure: Error?
        let flat = UnitPartition.flat(count: count, ranks: world.size)
        let mine = HeldPieces([flat.pieces(ofUnit: 0)[world.rank]]), per = flat.pieceSize(ofUnit: 0)
        let state = Array(entry.state.prefix(sections))
        // A sharded buffer takes its pieces straight in; a replicated one its flat range into a slice, gathered
        // after. Every section is read in one pass over the shards.
        let slices = state.map { $0.1.isWhole(of: count) ? FloatBuffer(count: per) : nil }
        let reads = state.enumerated().map { section, buffer in
            slices[section].map { (wanted: mine, section: section, into: $0.pointer) }
                ?? (wanted: buffer.1, section: section, into: buffer.0.pointer)
        }
        do { try read(reads, shards: shards, checkpoint: checkpoint) } catch { failure = error }
        let full = slices.contains { $0 != nil } ? FloatBuffer(count: per * world.size) : nil
        for (slice, (target, _)) in zip(slices, state) {
            guard let slice, let full else { continue }
            do { try world.allgather(slice.pointer, full.pointer, blockCount: per) } catch {
                failure = failure ?? error
            }
            target.pointer.update(from: full.pointer, count: count)
        }
        return failure
    }

    /// Copies each read's global ranges of its section from the shards holding them into its target (laid out
    /// as its pieces' local offsets say), opening each shard once and reading only the overlapping bytes.
    private func read(
        _ reads: [(wanted: HeldPieces, section: Int, into: UnsafeMutablePointer<Float>)],
        shards: [CheckpointManifest.Shard], checkpoint: String
    ) throws {
        for shard in shards {
            let held = shard.held
            // Each read's overlap with this shard: the part's place in the shard, and in the read's target.
            let overlaps = reads.map { r in
                r.wanted.pieces.flatMap { want in
                    held.parts(of: want.range).map {
                        (part: $0, local: want.local + $0.range.lowerBound - want.range.lowerBound)
                    }
                }
            }
            guard overlaps.contains(where: { !$0.isEmpty }) else { continue }
            let path = checkpoint + "/" + shard.file
            guard let handle = FileHandle(forReadingAtPath: path) else {
                throw CheckpointError.missingShard(file: path)
            }
            defer { try? handle.close() }
            for (r, parts) in zip(reads, overlaps) {
                for (part, local) in parts {
                    try handle.seek(toOffset: UInt64(4 * (r.section * held.count + part.local)))
                    let n = part.range.count
                    guard let data = try handle.read(upToCount: 4 * n), data.count == 4 * n else {
                        throw CheckpointError.truncatedShard(file: path, expected: shard.bytes, actual: -1)
                    }
                    data.withUnsafeBytes { raw in
                        (r.into + local).update(from: raw.bindMemory(to: Float.self).baseAddress!, count: n)
                    }
                }
            }
        }
    }
}
