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
    /// What a temporary file's name ends with: `.tmp-PID@HOST`, so that a later run can tell a dead writer's
    /// leftovers (this host, a pid no longer running) from a live one's, on a file system nodes share.
    static let temporarySuffix = ".tmp-\(getpid())@\(hostName)"
    static let hostName: String = {
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, name.count - 1)
        return String(cString: name)
    }()

    /// Removes the temporary files a killed writer left in `directory` (this host's, whose pid no longer
    /// runs), and says so through `log`; a live writer's and another host's are left alone. Returns the names
    /// removed.
    @discardableResult
    public static func removeStaleTemporaries(in directory: String, log: (String) -> Void) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var removed: [String] = []
        for name in names {
            guard let marker = name.range(of: ".tmp-", options: .backwards) else { continue }
            guard ownerIsGone(String(name[marker.upperBound...])) else { continue }
            if unlink(directory + "/" + name) == 0 { removed.append(name) }
        }
        if !removed.isEmpty {
            log(
                "removed \(removed.count) temporary file(s) a killed run left in \(directory): \(removed.sorted().joined(separator: ", "))"
            )
        }
        return removed
    }

    /// Whether `owner` (PID@HOST) names a process of this host that no longer runs (a live one's, or another
    /// host's, is never taken for gone).
    static func ownerIsGone(_ owner: String) -> Bool {
        let parts = owner.split(separator: "@", maxSplits: 1)
        guard parts.count == 2, parts[1] == hostName, let pid = Int32(parts[0]), pid > 0 else { return false }
        return kill(pid, 0) != 0 && errno == ESRCH
    }

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
            let temporary = path + AtomicFile.temporarySuffix
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
    private let ownsDescriptor: Bool

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
        ownsDescriptor = false
    }

    /// An existing file opened to be written in place, at offsets (each rank filling its part of a shared
    /// file); closed when the writer goes.
    public init(existing path: String) throws {
        let fd = Glibc.open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FileError(path: path, message: "cannot open it for writing: \(errnoText())") }
        (self.fd, self.path, ownsDescriptor) = (fd, path, true)
    }

    deinit { if ownsDescriptor { close(fd) } }

    /// Makes what was written durable.
    public func sync() throws {
        guard fsync(fd) == 0 else { throw FileError(path: path, message: "fsync failed: \(errnoText())") }
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

/// AtomicDirectory: a directory of several files (a model) that a reader finds whole or not at all. The files
/// are written into a staging directory inside the target (so on its file system, writable wherever the target
/// is, a mount point included), then renamed into it one by one, the file that makes them a model (an index, a
/// single weight file) last, after the earlier model's files that nothing replaces are removed.
public enum AtomicDirectory {
    /// The staging directory inside `target`, hidden, for this process (`tag`, shared by a job's ranks, is
    /// rank 0's pid@host, so a killed writer's leftovers can be told from a live one's).
    public static func staging(in target: String, tag: String) -> String { target + "/.partial-" + tag }

    /// This process's tag: pid@host (rank 0's, for a job).
    public static func tag() -> String { "\(getpid())@\(AtomicFile.hostName)" }

    /// Removes staging directories a killed writer on this host left in `target`.
    public static func removeStale(in target: String) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: target)) ?? []
        where name.hasPrefix(".partial-") && AtomicFile.ownerIsGone(String(name.dropFirst(".partial-".count))) {
            try? FileManager.default.removeItem(atPath: target + "/" + name)
        }
    }

    /// Moves the staged files into `target`: first the earlier model's files `replaceable` names that are not
    /// staged are removed, then the staged files are renamed in, those `last` accepts after the others. Nothing
    /// else in `target` is touched. A rename that fails leaves the rest in `staging`, which the error names.
    public static func commit(
        staging: String, to target: String, replaceable: (String) -> Bool, last: (String) -> Bool
    ) throws {
        let fm = FileManager.default
        let staged = try fm.contentsOfDirectory(atPath: staging)
        for name in try fm.contentsOfDirectory(atPath: target) where replaceable(name) && !staged.contains(name) {
            try? fm.removeItem(atPath: target + "/" + name)
        }
        for name in staged.filter({ !last($0) }) + staged.filter(last) {
            guard rename(staging + "/" + name, target + "/" + name) == 0 else {
                throw FileError(
                    path: target + "/" + name,
                    message: "moving it in failed: \(errnoText()); what was not moved in is in \(staging)")
            }
        }
        AtomicFile.syncDirectory(of: target + "/.")
        try? fm.removeItem(atPath: staging)
    }
}
