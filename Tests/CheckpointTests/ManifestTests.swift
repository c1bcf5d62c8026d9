// The checkpoint module on its own, in one process: manifests of one model (as earlier builds wrote them)
// and of several, their validation, and the store's save and resume of a stage's models.
import Checkpoint
import Configuration
import Distributed
import Foundation
import Model
import Optim
import Support
import TestSupport
import Testing

@Suite struct ManifestTests {
    static let config = RunConfig(
        model: LlamaConfig(dim: 8, nLayers: 1, nHeads: 2, vocabSize: 16, ffnHiddenSize: 16, maxSeqLen: 8))

    static func shards(_ prefix: String, count: Int, sections: Int, worldSize: Int) -> [CheckpointManifest.Shard] {
        (0..<worldSize).map { rank in
            let r = CheckpointManifest.range(rank: rank, worldSize: worldSize, count: count)
            let file: String = prefix + CheckpointManifest.shardName(rank: rank, worldSize: worldSize)
            let bytes: Int = 4 * sections * r.count
            return CheckpointManifest.Shard(
                file: file, rank: rank, start: r.lowerBound, end: r.upperBound, bytes: bytes,
                sha256: String(repeating: "ab", count: 32))
        }
    }

    static func manifest(extra: [CheckpointManifest.ModelShards]? = nil) -> CheckpointManifest {
        var m = CheckpointManifest(
            stage: .pretrain, step: 3, tokensSeen: 96, nextBatch: 3, adamStep: 3, worldSize: 2, parameterCount: 100,
            layoutSHA256: "x", seed: 1, config: config, shards: shards("", count: 100, sections: 3, worldSize: 2),
            savedAt: "now")
        if let extra {
            m.formatVersion = 3
            m.modelName = "policy"
            m.models = extra
        }
        return m
    }

    static func entry(_ name: String, sections: Int = 1, adamStep: Int? = nil) -> CheckpointManifest.ModelShards {
        .init(
            name: name, model: config.model, parameterCount: 40, layoutSHA256: "y", adamStep: adamStep,
            sections: sections,
            shards: shards(name + "-", count: 40, sections: sections, worldSize: 2))
    }

    /// Written and read back through the file: sealed, checked, the same fields.
    static func roundTrip(_ m: CheckpointManifest) throws -> CheckpointManifest {
        let dir = NSTemporaryDirectory() + "manifest-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try m.sealed().write(to: URL(fileURLWithPath: dir + "/manifest.json"))
        return try readManifest(dir)
    }

    /// A single-model manifest as the previous format wrote it still reads, with no other models.
    @Test func formatTwoStillReads() throws {
        var old = Self.manifest()
        old.formatVersion = 2
        let back = try Self.roundTrip(old)
        #expect(back.formatVersion == 2 && back.models == nil && back.modelName == nil && back.parameterCount == 100)
    }

    @Test func severalModelsRoundTrip() throws {
        let m = Self.manifest(extra: [Self.entry("reference"), Self.entry("value", sections: 3, adamStep: 3)])
        let back = try Self.roundTrip(m)
        #expect(back.modelName == "policy" && back.models?.map(\.name) == ["reference", "value"])
        #expect(back.models?.map(\.sections) == [1, 3] && back.models?.map(\.adamStep) == [nil, 3])
        #expect(
            back.models?[1].shards.map(\.file) == ["value-shard-00000-of-00002.bin", "value-shard-00001-of-00002.bin"])
    }

    /// Shards of pieces (sharding by units, format 4) read back; pieces that are not what their rank owns
    /// (swapped between ranks, overlapping, out of order, listed by only some shards, or numbers that would
    /// overflow) are refused naming the shard.
    @Test func shardsOfPiecesAreCheckedAgainstTheUnits() throws {
        let layout = ParameterLayout(config: Self.config.model)
        let partition = UnitPartition(units: layout.units, ranks: 2)
        var m = Self.manifest()
        m.formatVersion = 4
        m.parameterCount = layout.count
        m.shards = (0..<2).map { rank in
            let held = partition.held(rank: rank)
            return .init(
                file: CheckpointManifest.shardName(rank: rank, worldSize: 2), rank: rank,
                start: held.ranges.first!.lowerBound, end: held.ranges.last!.upperBound, bytes: 12 * held.count,
                sha256: String(repeating: "ab", count: 32), pieces: held.ranges.map { [$0.lowerBound, $0.upperBound] })
        }
        let back = try Self.roundTrip(m)
        #expect(back.shards.map(\.held) == [partition.held(rank: 0), partition.held(rank: 1)])
        #expect(back.shards[0].held.ranges.count == layout.units.count, "a piece of every unit")
        var swapped = m
        (swapped.shards[0].pieces, swapped.shards[1].pieces) = (m.shards[1].pieces, m.shards[0].pieces)
        var unordered = m
        unordered.shards[0].pieces!.reverse()
        var mixed = m
        mixed.shards[1].pieces = nil
        var older = m
        older.formatVersion = 3
        var huge = m
        (huge.shards[0].start, huge.shards[0].end) = (Int.min, Int.max)
        var wide = m
        wide.shards[1].pieces = [[-9_000_000_000_000_000_000, 9_000_000_000_000_000_000]]
        for (bad, named) in [
            (swapped, "shard-00000-of-00002"), (unordered, "shard-00000-of-00002"), (mixed, "shard-00001-of-00002"),
            (older, "format 3"), (huge, "shard-00000-of-00002"), (wide, "shard-00001-of-00002"),
        ] {
            #expect { try bad.validate(file: "m.json") } throws: {
                "\($0)".contains(named) && "\($0)".contains("m.json")
            }
        }
    }

    /// A model name that could leave the directory, a model listed twice, a frozen model with optimizer
    /// state, shard sizes that do not match the sections: each refused, naming what is wrong.
    @Test func badModelEntriesAreRefused() throws {
        var traversal = Self.entry("reference")
        traversal.name = "../x"
        var frozenWithMoments = Self.entry("reference")
        frozenWithMoments.adamStep = 2
        var short = Self.entry("value", sections: 3, adamStep: 1)
        short.shards[1].bytes -= 4
        let cases: [(CheckpointManifest, String)] = [
            (Self.manifest(extra: [traversal]), "../x"),
            (Self.manifest(extra: [Self.entry("a"), Self.entry("a")]), "twice"),
            (Self.manifest(extra: [frozenWithMoments]), "reference"),
            (Self.manifest(extra: [short]), "value-shard-00001"),
            (Self.manifest(extra: [Self.entry("policy")]), "policy"),
        ]
        for (manifest, named) in cases {
            #expect { try manifest.validate(file: "m.json") } throws: {
                "\($0)".contains(named) && "\($0)".contains("m.json")
            }
        }
        #expect(
            CheckpointManifest.isModelName("reward_model-2") && !CheckpointManifest.isModelName("Reward")
                && !CheckpointManifest.isModelName(""))
    }
}

@Suite struct CheckpointStoreTests {
    /// Two models, one trained (parameters, m, v) and one frozen (parameters only), saved and resumed into
    /// fresh models bitwise; a stage with other models is refused, naming both lists.
    @Test func savesAndResumesEveryModel() throws {
        let world = try Communicator.world()
        let dir = NSTemporaryDirectory() + "store-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = ManifestTests.config
        var frozenShape = config.model
        frozenShape.heads = [.score]
        func models(seed: UInt64) throws -> [CheckpointedModel] {
            let trained = try LlamaModel(config: config.model),
                frozen = try LlamaModel(config: frozenShape, purpose: .inference)
            trained.initialize(seed: seed)
            frozen.initialize(seed: seed + 1)
            let optimizer = AdamW(layout: trained.layout, settings: AdamWSettings())
            for i in 0..<optimizer.m.count { (optimizer.m[i], optimizer.v[i]) = (Float(i) * Float(seed), Float(seed)) }
            optimizer.step = Int(seed)
            return [
                CheckpointedModel(
                    name: "model", model: trained, optimizer: optimizer,
                    partition: .flat(count: trained.layout.count, ranks: 1)),
                CheckpointedModel(
                    name: "reward", model: frozen, optimizer: nil,
                    partition: .flat(count: frozen.layout.count, ranks: 1)),
            ]
        }
        let store = try CheckpointStore(
            directory: dir, stage: .pretrain, keep: 2, background: false, world: world, log: { _ in })
        let saved = try models(seed: 3)
        try store.save(step: 3, tokensSeen: 3, models: saved, config: config)
        let loaded = try models(seed: 9)
        let manifest = try #require(try store.resume(.auto, models: loaded, config: config))
        #expect(manifest.step == 3 && manifest.models?.first?.sections == 1 && manifest.formatVersion == 3)
        for (a, b) in zip(saved, loaded) {
            #expect(maxDifference(a.model.parameters.array, b.model.parameters.array) == 0, "\(a.name) parameters")
        }
        #expect(
            loaded[0].optimizer?.m.array == saved[0].optimizer?.m.array
                && loaded[0].optimizer?.v.array == saved[0].optimizer?.v.array)
        #expect(loaded[0].optimizer?.step == 3)
        let other = try models(seed: 1)
        let renamed = [
            other[0],
            CheckpointedModel(name: "reference", model: other[1].model, optimizer: nil, partition: other[1].partition),
        ]
        #expect { try store.resume(.auto, models: renamed, config: config) } throws: {
            "\($0)".contains("reward") && "\($0)".contains("reference")
        }
    }

    /// A checkpoint of one model keeps format 2, which earlier builds read; only several models need 3.
    @Test func oneModelKeepsFormatTwo() throws {
        let dir = NSTemporaryDirectory() + "store-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let manifest = try readManifest(try ParametersOnlyReaderTests.saved(dir).0)
        #expect(manifest.formatVersion == 2 && manifest.models == nil && manifest.modelName == nil)
    }
}

@Suite struct DirectoryLockTests {
    /// A second job on a directory whose lock is held is refused naming the holder; a lock file a dead job
    /// left (no flock held on it) is taken over, and said.
    @Test func oneJobPerDirectory() throws {
        let world = try Communicator.world()
        let dir = NSTemporaryDirectory() + "lock-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "host gone, pid 999999999, since yesterday: llama-train pretrain".write(
            toFile: dir + "/" + DirectoryLock.fileName, atomically: true, encoding: .utf8)
        var messages: [String] = []
        let first = try CheckpointStore(directory: dir, stage: .pretrain, keep: 2, background: false, world: world) {
            messages.append($0)
        }
        #expect(messages.contains { $0.contains("took over") && $0.contains("pid 999999999") }, "\(messages)")
        #expect {
            try CheckpointStore(directory: dir, stage: .pretrain, keep: 2, background: false, world: world) { _ in }
        } throws: {
            "\($0)".contains("in use by another job") && "\($0)".contains("pid \(getpid())")
        }
        withExtendedLifetime(first) {}
    }
}

@Suite struct ParametersOnlyReaderTests {
    /// A checkpoint of one trained model, saved on one rank; returns its step directory and the parameters.
    static func saved(_ dir: String) throws -> (String, [Float]) {
        let world = try Communicator.world()
        var config = ManifestTests.config
        (config.train.seqLen, config.train.microBatch, config.train.globalBatchTokens) = (8, 1, 8)
        let model = try LlamaModel(config: config.model)
        model.initialize(seed: 4)
        let optimizer = AdamW(layout: model.layout, settings: AdamWSettings())
        for i in 0..<optimizer.m.count { (optimizer.m[i], optimizer.v[i]) = (Float(i), 2) }
        let store = try CheckpointStore(
            directory: dir, stage: .pretrain, keep: 2, background: false, world: world, log: { _ in })
        try store.save(
            step: 1, tokensSeen: 1,
            models: [
                CheckpointedModel(
                    name: "model", model: model, optimizer: optimizer,
                    partition: .flat(count: model.layout.count, ranks: 1))
            ], config: config)
        store.releaseDirectory()
        return (dir + "/" + CheckpointManifest.directoryName(step: 1), model.parameters.array)
    }

    static func flipByte(_ path: String, at offset: Int) throws {
        let handle = try #require(FileHandle(forUpdatingAtPath: path))
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(offset))
        let byte = try #require(try handle.read(upToCount: 1))
        try handle.seek(toOffset: UInt64(offset))
        try handle.write(contentsOf: Data([byte[0] ^ 0x40]))
    }

    /// Every section's SHA-256 is in the manifest and is that of the section's bytes (checked with an
    /// independent hash: sha256sum). The reader verifies the parameter section alone: a damaged moment still
    /// reads, a damaged parameter is refused naming the shard. Without section hashes (an earlier build's
    /// manifest), the whole shard is verified.
    @Test func verifiesWhatItReads() throws {
        let dir = NSTemporaryDirectory() + "reader-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (step, parameters) = try Self.saved(dir)
        let manifest = try readManifest(step)
        let shard = manifest.shards[0]
        let path = step + "/" + shard.file
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let third = bytes.count / 3
        for k in 0..<3 {
            let section = dir + "/section-\(k)"
            try bytes.subdata(in: (k * third)..<((k + 1) * third)).write(to: URL(fileURLWithPath: section))
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
            process.arguments = [section]
            let pipe = Pipe()
            process.standardOutput = pipe
            try process.run()
            let sum = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).prefix(64)
            process.waitUntilExit()
            #expect(shard.sectionSHA256?[k] == String(sum), "section \(k)")
        }
        #expect(try CheckpointReader.loadModel(step).1.parameters.array == parameters)

        try Self.flipByte(path, at: third + 5)  // in m
        #expect(try CheckpointReader.loadModel(step).1.parameters.array == parameters, "m is not read")
        #expect(throws: CheckpointError.self) { try verifyShard(shard, in: step) }

        // The same checkpoint as an earlier build wrote it: no section hashes, so the damaged m is caught.
        var old = manifest
        old.shards[0].sectionSHA256 = nil
        try old.sealed().write(to: URL(fileURLWithPath: step + "/manifest.json"))
        #expect { try CheckpointReader.loadModel(step) } throws: {
            "\($0)".contains("SHA-256 mismatch") && "\($0)".contains(shard.file)
        }
        try manifest.sealed().write(to: URL(fileURLWithPath: step + "/manifest.json"))
        try Self.flipByte(path, at: 7)  // in the parameters
        #expect { try CheckpointReader.loadModel(step) } throws: {
            "\($0)".contains("SHA-256 mismatch") && "\($0)".contains(shard.file)
        }
    }
}
