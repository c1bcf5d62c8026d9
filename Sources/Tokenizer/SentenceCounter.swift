// SentenceCounter: the first step of BPE training, as sentencepiece's trainer does it: each line of the
// training text (a sentence) is dropped if empty, longer than max_sentence_length bytes, or holding U+2585;
// meta pieces in it are masked with a tab; it is normalised; equal sentences are counted once with their
// frequency. Lines come in batches that `threads` workers count into their own tables, read apart by the trainer.
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Bytes hashed in one call (Array's own hash feeds the hasher element by element).
public struct ByteKey: Hashable, Sendable {
    public let bytes: [UInt8]
    public func hash(into hasher: inout Hasher) { bytes.withUnsafeBytes { hasher.combine(bytes: $0) } }
}

public final class SentenceCounter: @unchecked Sendable {
    let options: BPETrainerOptions
    let threads: Int
    private let maskable: [[UInt8]]
    private let maskFirstBytes: [Bool]  // by byte value: could a meta piece start here?
    private let normalizer: NormalizerSpec
    private var workerTables: [Table]
    public private(set) var lines = 0

    public init(options: BPETrainerOptions, threads: Int = 1) throws {
        self.options = options
        self.threads = max(1, threads)
        maskable = try BPETrainer.metaPieces(options).values.map(\.bytes).sorted { $0.count > $1.count }
        var first = [Bool](repeating: false, count: 256)
        for piece in maskable { if let b = piece.first { first[Int(b)] = true } }
        maskFirstBytes = first
        normalizer = BPETrainer.normalizer(options)
        workerTables = (0..<self.threads).map { _ in Table() }
    }

    /// Counts one line (without its "\n").
    public func add(_ line: UnsafeBufferPointer<UInt8>) {
        lines += 1
        count(line, into: &workerTables[0].counts)
    }

    /// Counts a batch of lines: `text[lineStarts[i] ..< lineStarts[i + 1] − 1]` is line i (each ends with a
    /// "\n" that is not part of it), spread over the workers.
    public func add(batch text: [UInt8], lineStarts: [Int]) {
        let n = lineStarts.count - 1
        guard n > 0 else { return }
        lines += n
        let workers = min(threads, n)
        text.withUnsafeBufferPointer { buffer in
            nonisolated(unsafe) let buffer = buffer
            let tables = workerTables
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                for i in (w * n / workers)..<((w + 1) * n / workers) {
                    let line = UnsafeBufferPointer(rebasing: buffer[lineStarts[i]..<(lineStarts[i + 1] - 1)])
                    count(line, into: &tables[w].counts)
                }
            }
        }
    }

    /// Each worker's distinct normalised sentences with their frequencies (a sentence may be in several).
    func tables() -> [[ByteKey: Int]] { workerTables.map(\.counts) }

    static func containsUnknownStandIn(_ line: UnsafeBufferPointer<UInt8>) -> Bool {
        guard line.count >= 3 else { return false }
        var p = line.baseAddress!
        let end = line.baseAddress! + line.count
        while p < end - 2, let hit = memchr(p, 0xE2, end - 2 - p) {
            let q = UnsafePointer(hit.assumingMemoryBound(to: UInt8.self))
            if q[1] == 0x96 && q[2] == 0x85 { return true }
            p = q + 1
        }
        return false
    }

    private func count(_ line: UnsafeBufferPointer<UInt8>, into table: inout [ByteKey: Int]) {
        if line.isEmpty || line.count > options.maxSentenceLength { return }
        // U+2585 (the unknown character's stand-in) is E2 96 85 in UTF-8.
        if Self.containsUnknownStandIn(line) { return }
        var bytes = Array(line)
        if line.contains(where: { maskFirstBytes[Int($0)] }) { bytes = BPETrainer.mask(bytes, pieces: maskable) }
        let normalized = Tokenizer.normalize(bytes, spec: normalizer, whitespaceAsSuffix: false)
        if normalized.isEmpty { return }
        table[ByteKey(bytes: normalized), default: 0] += 1
    }
}

/// One worker's counts; worker w touches only tables[w].
private final class Table: @unchecked Sendable {
    var counts: [ByteKey: Int] = [:]
}
