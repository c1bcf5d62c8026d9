// Byte streams of corpus files: plain (optionally one byte range of the file), gzip and zstd, read in bounded
// chunks so that memory does not grow with the input. The compression is told by the file's magic bytes,
// not its name; a truncated or corrupt stream is an error that names the file.
import CZlib
import CZstd
import Foundation
import Support

#if canImport(Glibc)
    import Glibc
#endif

public enum Compression: String, Sendable {
    case none, gzip, zstd

    /// What the first bytes of `path` say.
    public static func of(_ path: String) throws -> Compression {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw DatasetError.unreadable(file: path, reason: errnoText()) }
        defer { close(fd) }
        var magic = [UInt8](repeating: 0, count: 4)
        let n = read(fd, &magic, 4)
        if n >= 2 && magic[0] == 0x1F && magic[1] == 0x8B { return .gzip }
        if n == 4 && magic == [0x28, 0xB5, 0x2F, 0xFD] { return .zstd }
        return .none
    }
}

/// A source of bytes; `read` returns 0 at the end and throws on a damaged stream.
public protocol ByteStream: AnyObject {
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

/// Opens `path` as a stream of its decompressed bytes.
public func openByteStream(_ path: String) throws -> ByteStream {
    switch try Compression.of(path) {
    case .none: try FileStream(path: path)
    case .gzip: try GzipStream(path: path)
    case .zstd: try ZstdStream(path: path)
    }
}

/// Bytes [start, end) of a file (to its end when `end` is nil), with pread so the offset is explicit.
public final class FileStream: ByteStream {
    let path: String
    private let fd: Int32
    private var position: Int
    private let end: Int?

    public init(path: String, start: Int = 0, end: Int? = nil) throws {
        self.path = path
        fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            throw DatasetError.unreadable(file: path, reason: UnreadablePath.reason(path))
        }
        var info = stat()
        if fstat(fd, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR {
            close(fd)
            throw DatasetError.unreadable(file: path, reason: "a directory, not a file")
        }
        position = start
        self.end = end
    }

    deinit { close(fd) }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let wanted = end.map { min(buffer.count, max(0, $0 - position)) } ?? buffer.count
        guard wanted > 0 else { return 0 }
        while true {
            let n = pread(fd, buffer.baseAddress!, wanted, off_t(position))
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw DatasetError.unreadable(file: path, reason: errnoText()) }
            position += n
            return n
        }
    }
}

/// The compressed bytes of a file, in chunks, for the decompressors.
private final class CompressedInput {
    let file: FileStream
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    var available = 0
    var consumed = 0
    var atEnd = false

    init(path: String) throws { file = try FileStream(path: path) }

    /// Refills when everything read so far was consumed; false at the end of the file.
    func refill() throws -> Bool {
        guard consumed == available else { return true }
        guard !atEnd else { return false }
        available = try buffer.withUnsafeMutableBytes { try file.read(into: $0) }
        consumed = 0
        atEnd = available == 0
        return !atEnd
    }
}

/// gzip, including files of several members (`cat a.gz b.gz`), as gzip -d reads them.
public final class GzipStream: ByteStream {
    let path: String
    private let input: CompressedInput
    private var stream = z_stream()
    private var inMember = false
    private var finished = false

    public init(path: String) throws {
        self.path = path
        input = try CompressedInput(path: path)
        // 15 + 16: a gzip wrapper with the largest window.
        guard inflateInit2_(&stream, 15 + 16, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw DatasetError.unreadable(file: path, reason: "zlib could not start")
        }
    }

    deinit { inflateEnd(&stream) }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard !finished else { return 0 }
        while true {
            guard try input.refill() else {
                if inMember {
                    throw DatasetError.invalid(
                        "\(path): truncated gzip stream (the file ends inside a member); re-download or recompress it")
                }
                finished = true
                return 0
            }
            let result: Int32 = input.buffer.withUnsafeMutableBufferPointer { compressed in
                stream.next_in = compressed.baseAddress! + input.consumed
                stream.avail_in = UInt32(input.available - input.consumed)
                stream.next_out = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
                stream.avail_out = UInt32(buffer.count)
                let r = inflate(&stream, Z_NO_FLUSH)
                input.consumed = input.available - Int(stream.avail_in)
                return r
            }
            let produced = buffer.count - Int(stream.avail_out)
            switch result {
            case Z_STREAM_END:
                inMember = false
                inflateReset(&stream)
            case Z_OK, Z_BUF_ERROR:
                inMember = true
            default:
                let message = stream.msg.map { String(cString: $0) } ?? "error \(result)"
                throw DatasetError.invalid("\(path): corrupt gzip stream (\(message)); re-download or recompress it")
            }
            if produced > 0 { return produced }
        }
    }
}

/// zstd, including files of several frames.
public final class ZstdStream: ByteStream {
    let path: String
    private let input: CompressedInput
    private let context: OpaquePointer
    private var inFrame = false
    private var finished = false

    public init(path: String) throws {
        self.path = path
        input = try CompressedInput(path: path)
        guard let context = ZSTD_createDCtx() else {
            throw DatasetError.unreadable(file: path, reason: "libzstd could not start")
        }
        self.context = context
    }

    deinit { ZSTD_freeDCtx(context) }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard !finished else { return 0 }
        while true {
            guard try input.refill() else {
                if inFrame {
                    throw DatasetError.invalid(
                        "\(path): truncated zstd stream (the file ends inside a frame); re-download or recompress it")
                }
                finished = true
                return 0
            }
            var output = ZSTD_outBuffer(dst: buffer.baseAddress, size: buffer.count, pos: 0)
            let result: Int = input.buffer.withUnsafeBytes { compressed in
                var source = ZSTD_inBuffer(src: compressed.baseAddress, size: input.available, pos: input.consumed)
                let r = ZSTD_decompressStream(context, &output, &source)
                input.consumed = source.pos
                return r
            }
            if ZSTD_isError(result) != 0 {
                throw DatasetError.invalid(
                    "\(path): corrupt zstd stream (\(String(cString: ZSTD_getErrorName(result)))); re-download or recompress it"
                )
            }
            inFrame = result != 0  // 0: a frame has just been completed
            if output.pos > 0 { return output.pos }
        }
    }
}

/// Lines of a byte stream (without their "\n", or "\r\n": Windows line ends read as Unix ones, while a lone
/// CR is data), each with the offset of its first byte in the stream and its 1-based number from where the
/// reader started. The buffer grows only for a line longer than itself.
public final class LineReader {
    private let stream: ByteStream
    private var buffer: [UInt8]
    private var start = 0, end = 0
    private var streamEnded = false
    /// Stream offset of buffer[0].
    private var base: Int
    public private(set) var lineNumber: Int
    /// The stream offset just past the current line's end (its LF or CRLF), valid during `next`'s body.
    public private(set) var nextLineOffset = 0

    public init(_ stream: ByteStream, offset: Int = 0, chunk: Int = 1 << 20) {
        self.stream = stream
        buffer = [UInt8](repeating: 0, count: chunk)
        base = offset
        lineNumber = 0
    }

    /// Calls `body` with the next line's bytes (valid only during the call) and its offset; nil at the end.
    public func next<T>(_ body: (UnsafeBufferPointer<UInt8>, _ offset: Int) throws -> T) throws -> T? {
        while true {
            let newline: Int? = buffer.withUnsafeBufferPointer { b -> Int? in
                guard end > start, let p = memchr(b.baseAddress! + start, 0x0A, end - start) else { return nil }
                return UnsafeRawPointer(p) - UnsafeRawPointer(b.baseAddress!)
            }
            if let newline {
                return try emit(until: newline, consumed: newline + 1, body)
            }
            if streamEnded {
                guard end > start else { return nil }
                return try emit(until: end, consumed: end, body)
            }
            // Keep the partial line, make room, read more.
            if start > 0 {
                buffer.withUnsafeMutableBytes { b in _ = memmove(b.baseAddress!, b.baseAddress! + start, end - start) }
                base += start
                end -= start
                start = 0
            }
            if end == buffer.count { buffer += [UInt8](repeating: 0, count: buffer.count) }
            let n = try buffer.withUnsafeMutableBytes { b in
                try stream.read(into: UnsafeMutableRawBufferPointer(rebasing: b[end...]))
            }
            if n == 0 { streamEnded = true } else { end += n }
        }
    }

    private func emit<T>(
        until lineEnd: Int, consumed: Int, _ body: (UnsafeBufferPointer<UInt8>, Int) throws -> T
    ) throws -> T {
        lineNumber += 1
        let offset = base + start
        nextLineOffset = base + consumed
        let endsWithLF = consumed > lineEnd
        let result = try buffer.withUnsafeBufferPointer { b in
            let content = endsWithLF && lineEnd > start && b[lineEnd - 1] == 0x0D ? lineEnd - 1 : lineEnd
            return try body(UnsafeBufferPointer(rebasing: b[start..<content]), offset)
        }
        start = consumed
        return result
    }
}
