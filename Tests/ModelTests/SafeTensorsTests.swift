// safetensors reading and writing: round trips, dtype conversion, sharded Hugging Face directories, and
// every way a file can lie (truncated, tampered header, overlapping offsets, missing tensor, wrong shape).
import Foundation
import Kernels
import Model
import Testing

/// Builds a safetensors file by hand, so tests can write what our writer never would.
func rawSafeTensors(header: String, data: [UInt8]) -> Data {
    var bytes = Data()
    var length = UInt64(header.utf8.count).littleEndian
    withUnsafeBytes(of: &length) { bytes.append(contentsOf: $0) }
    bytes.append(contentsOf: Array(header.utf8))
    bytes.append(contentsOf: data)
    return bytes
}

func floatBytes(_ values: [Float]) -> [UInt8] {
    values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
}

@Suite struct SafeTensorsTests {
    @Test func writeThenReadRoundTrips() throws {
        let dir = try temporaryDirectory()
        let a: [Float] = [1, -2, 3.5, 4, 5, 6], b: [Float] = [0.25]
        try a.withUnsafeBufferPointer { pa in
            try b.withUnsafeBufferPointer { pb in
                try SafeTensorsWriter.write(
                    [
                        SafeTensorsEntry(name: "a", shape: [2, 3], values: pa),
                        SafeTensorsEntry(name: "b.weight", shape: [1], values: pb),
                    ],
                    to: dir + "/x.safetensors")
            }
        }
        let file = try SafeTensorsFile(path: dir + "/x.safetensors")
        #expect(try file.floats("a", expectedShape: [2, 3]) == a)
        #expect(try file.floats("b.weight") == b)
        #expect(file.metadata["format"] == "pt")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).allSatisfy { !$0.contains(".tmp-") })
    }

    @Test func halfPrecisionIsConverted() throws {
        let dir = try temporaryDirectory()
        // BF16 1.5 = 0x3FC0, -2 = 0xC000; F16 1.5 = 0x3E00, -2 = 0xC000, 65504 = 0x7BFF, 2^-24 = 0x0001.
        let bf16: [UInt16] = [0x3FC0, 0xC000], f16: [UInt16] = [0x3E00, 0xC000, 0x7BFF, 0x0001]
        let bytes = (bf16 + f16).flatMap { [UInt8($0 & 0xff), UInt8($0 >> 8)] }
        let header =
            #"{"b":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"h":{"dtype":"F16","shape":[4],"data_offsets":[4,12]}}"#
        try rawSafeTensors(header: header, data: bytes).write(to: URL(fileURLWithPath: dir + "/h.safetensors"))
        let file = try SafeTensorsFile(path: dir + "/h.safetensors")
        #expect(try file.floats("b") == [1.5, -2])
        #expect(try file.floats("h") == [1.5, -2, 65504, 0x1p-24])
    }

    @Test func truncatedFileIsReported() throws {
        let dir = try temporaryDirectory()
        let good = rawSafeTensors(
            header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            data: floatBytes([1, 2, 3, 4]))
        try good.prefix(good.count - 3).write(to: URL(fileURLWithPath: dir + "/t.safetensors"))
        #expect { try SafeTensorsFile(path: dir + "/t.safetensors") } throws: { error in
            guard case let .truncated(file, _) = error as? SafeTensorsError else { return false }
            return file == dir + "/t.safetensors"
        }
        try good.prefix(5).write(to: URL(fileURLWithPath: dir + "/tiny.safetensors"))
        #expect(throws: SafeTensorsError.self) { try SafeTensorsFile(path: dir + "/tiny.safetensors") }
    }

    @Test(arguments: [
        ("not json", #"{"a": nonsense}"#),
        ("offsets beyond the data", #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,32]}}"#),
        ("span disagrees with the shape", #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#),
        (
            "overlapping tensors",
            #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#
        ),
        ("a gap before the data ends", #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#),
        ("missing data_offsets", #"{"a":{"dtype":"F32","shape":[4]}}"#),
        ("header length beyond the file", ""),
    ])
    func tamperedHeaderIsRefused(_ what: String, _ header: String) throws {
        let dir = try temporaryDirectory()
        var bytes = rawSafeTensors(header: header, data: floatBytes([1, 2, 3, 4]))
        if header.isEmpty { bytes = Data([0xff, 0xff, 0, 0, 0, 0, 0, 0]) + Data(floatBytes([1, 2])) }
        try bytes.write(to: URL(fileURLWithPath: dir + "/bad.safetensors"))
        #expect(throws: SafeTensorsError.self, "\(what)") { try SafeTensorsFile(path: dir + "/bad.safetensors") }
    }

    @Test func missingTensorAndWrongShapeNameTheTensor() throws {
        let dir = try temporaryDirectory()
        try rawSafeTensors(
            header: #"{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#,
            data: floatBytes([1, 2, 3, 4])
        ).write(to: URL(fileURLWithPath: dir + "/m.safetensors"))
        let file = try SafeTensorsFile(path: dir + "/m.safetensors")
        #expect(throws: SafeTensorsError.missingTensor(name: "b", file: dir + "/m.safetensors")) {
            try file.floats("b")
        }
        #expect(
            throws: SafeTensorsError.shapeMismatch(
                name: "a", file: dir + "/m.safetensors", expected: [4], actual: [2, 2])
        ) {
            try file.floats("a", expectedShape: [4])
        }
    }
}

@Suite struct HuggingFaceCheckpointTests {
    static let config = LlamaConfig(
        dim: 16, nLayers: 2, nHeads: 4, nKVHeads: 2, vocabSize: 11, ffnHiddenSize: 24,
        maxSeqLen: 16)

    @Test func saveThenLoadGivesTheSameParameters() throws {
        let dir = try temporaryDirectory()
        let model = try LlamaModel(config: Self.config)
        model.initialize(seed: 5)
        try HuggingFace.save(config: model.config, layout: model.layout, parameters: model.parameters, directory: dir)
        let loaded = try HuggingFace.loadModel(directory: dir)
        #expect(loaded.config == model.config)
        #expect(loaded.parameters.array == model.parameters.array)
    }

    /// Saved as bf16 or fp16 and split at a small size: the index names every tensor, the files read back to
    /// the rounded weights, and re-saving whole removes the shards (no older model left beside the new one).
    @Test(arguments: [SafeTensorsDType.bf16, .f16])
    func savedHalfAndShardedLoadsRounded(_ dtype: SafeTensorsDType) throws {
        let dir = try temporaryDirectory()
        let model = try LlamaModel(config: Self.config)
        model.initialize(seed: 5)
        try HuggingFace.save(
            config: model.config, layout: model.layout, parameters: model.parameters, directory: dir, dtype: dtype,
            maxShardBytes: 1000)
        let names = try FileManager.default.contentsOfDirectory(atPath: dir)
        #expect(names.filter(HuggingFace.isShardName).count > 2 && !names.contains("model.safetensors"))
        let loaded = try HuggingFace.loadModel(directory: dir)
        let expected = model.parameters.array.map { dtype == .bf16 ? lm_round_bf16($0) : Float(Float16($0)) }
        #expect(loaded.parameters.array == expected)
        try HuggingFace.save(config: model.config, layout: model.layout, parameters: model.parameters, directory: dir)
        let after = try FileManager.default.contentsOfDirectory(atPath: dir)
        #expect(after.filter(HuggingFace.isShardName).isEmpty && !after.contains("model.safetensors.index.json"))
        #expect(try HuggingFace.loadModel(directory: dir).parameters.array == model.parameters.array)
    }

    /// model-0000N-of-0000M.safetensors with model.safetensors.index.json, as large checkpoints ship.
    @Test func shardedCheckpointLoads() throws {
        let dir = try temporaryDirectory()
        let model = try LlamaModel(config: Self.config)
        model.initialize(seed: 6)
        let tensors = model.layout.tensors
        let halves = [Array(tensors.prefix(tensors.count / 2)), Array(tensors.suffix(from: tensors.count / 2))]
        var weightMap: [String: String] = [:]
        for (i, half) in halves.enumerated() {
            let file = String(format: "model-%05d-of-%05d.safetensors", i + 1, halves.count)
            try SafeTensorsWriter.write(
                half.map {
                    SafeTensorsEntry(
                        name: $0.name, shape: $0.shape,
                        values: UnsafeBufferPointer(model.parameters.slice($0.offset, $0.count)))
                }, to: dir + "/" + file)
            for spec in half { weightMap[spec.name] = file }
        }
        try JSONSerialization.data(withJSONObject: ["metadata": [:], "weight_map": weightMap])
            .write(to: URL(fileURLWithPath: dir + "/model.safetensors.index.json"))
        try HuggingFace.configJSON(Self.config).write(to: URL(fileURLWithPath: dir + "/config.json"))
        let loaded = try HuggingFace.loadModel(directory: dir)
        #expect(loaded.parameters.array == model.parameters.array)

        // A shard map that forgets a tensor is an error naming it and the index file.
        weightMap.removeValue(forKey: "model.norm.weight")
        try JSONSerialization.data(withJSONObject: ["weight_map": weightMap])
            .write(to: URL(fileURLWithPath: dir + "/model.safetensors.index.json"))
        #expect(
            throws: SafeTensorsError.missingTensor(
                name: "model.norm.weight", file: dir + "/model.safetensors.index.json")
        ) {
            try HuggingFace.loadModel(directory: dir)
        }
    }

    @Test func weightsOfAnotherShapeAreRefused() throws {
        let dir = try temporaryDirectory()
        let model = try LlamaModel(config: Self.config)
        try HuggingFace.save(config: model.config, layout: model.layout, parameters: model.parameters, directory: dir)
        var other = Self.config
        other.ffnHiddenSize = 32
        try HuggingFace.configJSON(other).write(to: URL(fileURLWithPath: dir + "/config.json"))
        #expect { try HuggingFace.loadModel(directory: dir) } throws: { error in
            guard case let .shapeMismatch(name, _, expected, actual) = error as? SafeTensorsError else { return false }
            return name == "model.layers.0.mlp.gate_proj.weight" && expected == [32, 16] && actual == [24, 16]
        }
    }

    @Test func directoryWithoutWeightsSaysWhatIsMissing() throws {
        let dir = try temporaryDirectory()
        try HuggingFace.configJSON(Self.config).write(to: URL(fileURLWithPath: dir + "/config.json"))
        #expect(throws: SafeTensorsError.self) { try HuggingFace.loadModel(directory: dir) }
    }
}

@Suite struct WeightSourceTests {
    static let config = HuggingFaceCheckpointTests.config

    /// A sharded directory of the model, in files of about 1 kB.
    static func sharded() throws -> (String, LlamaModel) {
        let dir = try temporaryDirectory()
        let model = try LlamaModel(config: config)
        model.initialize(seed: 8)
        try HuggingFace.save(
            config: config, layout: model.layout, parameters: model.parameters, directory: dir, maxShardBytes: 1000)
        return (dir, model)
    }

    /// Any range of any tensor reads as that range of the whole, across files and in bf16 and f16 too.
    @Test func rangesReadAsTheirPartOfTheWhole() throws {
        let (dir, model) = try Self.sharded()
        let weights = try HuggingFaceWeights(directory: dir)
        for spec in model.layout.tensors {
            for range in [0..<spec.count, 1..<(spec.count / 2), (spec.count - 3)..<spec.count] {
                var part = [Float](repeating: .nan, count: range.count)
                try part.withUnsafeMutableBufferPointer {
                    try weights.read(spec.name, elements: range, into: $0.baseAddress!)
                }
                let whole = Array(model.parameters.slice(spec.offset + range.lowerBound, range.count))
                #expect(part == whole, "\(spec.name) \(range)")
            }
        }
    }

    /// Shard sizes as Hugging Face's max_shard_size writes them.
    @Test func shardSizesParse() {
        #expect(SafeTensorsDType.shardBytes("5GB") == 5_000_000_000)
        #expect(SafeTensorsDType.shardBytes("900MB") == 900_000_000 && SafeTensorsDType.shardBytes("2GiB") == 1 << 31)
        #expect(SafeTensorsDType.shardBytes("20kB") == 20_000 && SafeTensorsDType.shardBytes("4096") == 4096)
        #expect(SafeTensorsDType.shardBytes("1.5 gb") == 1_500_000_000)
        for bad in ["", "GB", "5XB", "-1GB", "0", "nan"] { #expect(SafeTensorsDType.shardBytes(bad) == nil, "\(bad)") }
    }

    /// A bad source is refused when opened, naming the file and the tensor: a tensor the index lacks, one of
    /// another shape, an index naming a missing file, a file shorter than its header says.
    @Test func badSourcesAreNamed() throws {
        let fm = FileManager.default
        let layout = ParameterLayout(config: Self.config)
        func load(_ dir: String) throws {
            try HuggingFace.loadWeights(directory: dir, layout: layout, into: FloatBuffer(count: layout.count))
        }
        func index(_ dir: String) throws -> [String: Any] {
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: dir + "/model.safetensors.index.json")))
                as! [String: Any]
        }
        func writeIndex(_ dir: String, _ map: [String: String]) throws {
            try JSONSerialization.data(withJSONObject: ["weight_map": map])
                .write(to: URL(fileURLWithPath: dir + "/model.safetensors.index.json"))
        }
        let norm = "model.norm.weight"

        var (dir, _) = try Self.sharded()
        var map = try index(dir)["weight_map"] as! [String: String]
        map.removeValue(forKey: norm)
        try writeIndex(dir, map)
        #expect { try load(dir) } throws: { "\($0)".contains(norm) && "\($0)".contains("index.json") }

        (dir, _) = try Self.sharded()
        map = try index(dir)["weight_map"] as! [String: String]
        let missing = map[norm]!
        try fm.removeItem(atPath: dir + "/" + missing)
        #expect { try load(dir) } throws: { "\($0)".contains(missing) && "\($0)".contains("missing") }

        (dir, _) = try Self.sharded()
        map = try index(dir)["weight_map"] as! [String: String]
        let embedding = "model.embed_tokens.weight"
        let file = dir + "/" + map[embedding]!
        let bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        try bytes.prefix(bytes.count - 4).write(to: URL(fileURLWithPath: file))
        #expect { try load(dir) } throws: { "\($0)".contains(file) && "\($0)".contains("truncated") }

        (dir, _) = try Self.sharded()
        var other = Self.config
        other.dim = 8
        other.nHeads = 2
        other.nKVHeads = 1
        try HuggingFace.configJSON(other).write(to: URL(fileURLWithPath: dir + "/config.json"))
        let otherLayout = ParameterLayout(config: other)
        #expect {
            try HuggingFace.loadWeights(
                directory: dir, layout: otherLayout, into: FloatBuffer(count: otherLayout.count))
        } throws: {
            "\($0)".contains(embedding) && "\($0)".contains("shape")
        }
    }
}
