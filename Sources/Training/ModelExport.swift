// Writing a model in Hugging Face layout from every rank of a job (HuggingFaceExport's protocol): no rank
// gathers the model or holds more than its part, and the directory appears whole or not at all.
import Distributed
import Foundation
import Model
import Support

/// Every rank writes `ranges` (global flat ranges of the parameters and where their values are); rank 0
/// creates the files first and, after every rank has written, adds the index, config.json and what `extras`
/// writes into the staging directory, then moves it into place. Every rank must call it.
public func exportHuggingFace(
    config: LlamaConfig, layout: ParameterLayout, ranges: [(global: Range<Int>, values: UnsafePointer<Float>)],
    world: Communicator, directory: String, dtype: SafeTensorsDType, maxShardBytes: Int,
    extras: (String) throws -> Void
) throws {
    let export = HuggingFaceExport(config: config, layout: layout, dtype: dtype, maxShardBytes: maxShardBytes)
    // One staging name for the job: rank 0's pid@host, sent to every rank (which may be on other hosts).
    let tag = try world.broadcast(bytes: world.isRoot ? Array(AtomicDirectory.tag().utf8) : [])
    let staging = AtomicDirectory.staging(in: directory, tag: String(decoding: tag, as: UTF8.self))
    do {
        if world.isRoot { try export.begin(directory, staging: staging) }
        try world.barrier()
        try export.write(ranges, in: staging)
        try world.barrier()
        if world.isRoot { try extras(staging) }
    } catch {
        if world.isRoot { try? FileManager.default.removeItem(atPath: staging) }
        throw error
    }
    // Once files move in, a failure keeps what was not moved in staging, which the error names.
    if world.isRoot { try export.commit(staging: staging, to: directory) }
    try world.barrier()
}
