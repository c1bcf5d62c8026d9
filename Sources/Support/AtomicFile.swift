// AtomicFile: write a file so that readers see the old version or the whole new one, never a torn one.
//
// The bytes go to a temporary file beside the target, are fsync'ed, renamed over the target, and the
// directory is fsync'ed so the rename itself survives a crash.
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

public struct FileError: Error, CustomStringConvertible {
    public let path: String
    public let message: String
    public var description: String { "\(path): \(message)" }

    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }
}

public enum AtomicFile {
    /// Calls `body` with a writer for a temporary file, then commits it to `path`.
    /// On any error the temporary file is removed and `path` is untouched.
    public static func write(to path: String, _ body: (FileWriter) throws -> Void) throws {
        let pending = try Pending(path: path)
        try body(pending.writer)
        try pending.commit()
    }

    /// A file being written whose lifetime spans many calls (a token shard filled document by document):
    /// `commit` makes it appear at `path`; dropped without a commit, it leaves nothing behind.
    public final class Pending {
        public let path: String
        public let writer: FileWriter
        private var open = true  // the descriptor is closed exactly once, whichever step fails
        private var committed = false

        public init(path: String) throws {
            self.path = path
            let temporary = path + ".tmp-\(getpid())"
            let fd = Glibc.open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            guard fd >= 0 else { throw FileError(path: temporary, message: "cannot create: \(errnoText())") }
            writer = FileWriter(fd: fd, path: temporary)
        }

        public func commit() throws {
            let fd = writer.fd, temporary = writer.path
            do {
                guard fsync(fd) == 0 else { throw FileError(path: temporary, message: "fsync failed: \(errnoText())") }
                open = false
                guard close(fd) == 0 else { throw FileError(path: temporary, message: "close failed: \(errnoText())") }
                guard rename(temporary, path) == 0 else {
                    throw FileError(path: path, message: "rename from \(temporary) failed: \(errnoText())")
                }
            } catch {
                discard()
                throw error
            }
            committed = true
            AtomicFile.syncDirectory(of: path)
        }

        public func discard() {
            guard !committed else { return }
            if open { close(writer.fd) }
            open = false
            unlink(writer.path)
        }

        deinit { discard() }
    }

    public static func write(_ data: Data, to path: String) throws {
        try write(to: path) { try $0.write(data) }
    }

    static func syncDirectory(of path: String) {
        let directory = (path as NSString).deletingLastPathComponent
        let fd = open(directory.isEmpty ? "." : directory, O_RDONLY)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }
}

public final class FileWriter {
    let fd: Int32
    let path: String

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError(path: path, message: "write failed: \(errnoText())")
            }
            done += n
        }
    }

    public func write(_ data: Data) throws {
        try data.withUnsafeBytes { try write($0) }
    }

    /// Writes `bytes` at `offset` without moving the file position (a header filled in last).
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError(path: path, message: "write failed: \(errnoText())")
            }
            done += n
        }
    }
}

public func errnoText() -> String { String(cString: strerror(errno)) }

extension AtomicFile {
    /// Creates `directory` if needed and proves a file can be made in it (created and removed at once, no
    /// fsync: this asks "may I write here", not "is it durable"). Throws a FileError naming the directory.
    public static func checkWritable(directory: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw FileError(path: directory, message: "cannot create the directory: \(plainText(error))")
        }
        let probe = directory + "/.write-probe-\(getpid())"
        let fd = open(probe, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw FileError(path: directory, message: "cannot write here: \(errnoText())") }
        close(fd)
        unlink(probe)
    }
}
