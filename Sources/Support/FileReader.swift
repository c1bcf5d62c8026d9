// FileReader: a file read at offsets (pread), for the readers that take only the ranges they need: a rank
// loading its part of a model reads its part of the bytes, never a mapping or a copy of the whole file.
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

public final class FileReader {
    public let path: String
    /// The size when opened: reads are checked against the file itself, which may have shrunk since.
    public let size: Int
    private let descriptor: Int32

    /// Opens a regular file; the error names the path and why (missing, a directory, permission, a link loop).
    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FileError(path: path, message: "cannot read it: \(UnreadablePath.reason(path))") }
        var status = stat()
        guard fstat(fd, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw FileError(path: path, message: "cannot read it: not a regular file")
        }
        descriptor = fd
        size = Int(status.st_size)
    }

    deinit { close(descriptor) }

    /// Reads exactly `count` bytes at `offset`; false when the file ends first.
    public func read(into destination: UnsafeMutableRawPointer, count: Int, at offset: Int) throws -> Bool {
        var done = 0
        while done < count {
            let n = pread(descriptor, destination + done, count - done, off_t(offset + done))
            if n < 0 && errno == EINTR { continue }
            if n == 0 { return false }
            guard n > 0 else { throw FileError(path: path, message: "cannot read it: \(errnoText())") }
            done += n
        }
        return true
    }

    /// `count` bytes at `offset`, or nil when the file ends first.
    public func bytes(count: Int, at offset: Int) throws -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: count)
        let whole = try bytes.withUnsafeMutableBytes { try read(into: $0.baseAddress!, count: count, at: offset) }
        return whole ? bytes : nil
    }

    /// The SHA-256 (hex) of the bytes in `range`, streamed through one buffer of at most `chunk` bytes; nil
    /// when the file ends first.
    public func sha256(of range: Range<Int>, chunk: Int = 8 << 20) throws -> String? {
        var hasher = SHA256()
        var buffer = [UInt8](repeating: 0, count: min(chunk, max(1, range.count)))
        var position = range.lowerBound
        while position < range.upperBound {
            let n = min(buffer.count, range.upperBound - position)
            let whole = try buffer.withUnsafeMutableBytes { try read(into: $0.baseAddress!, count: n, at: position) }
            guard whole else { return nil }
            buffer.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            position += n
        }
        return hasher.hexDigest()
    }
}
