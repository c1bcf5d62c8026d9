// DirectoryLock: a checkpoint directory belongs to one job at a time. Rank 0 holds an exclusive flock on
// `job.lock` in it for the store's life, with the holder written inside (host, pid, start, command), so a
// relaunch while the old job still runs, or a second job sent to the same directory by a typo, is refused
// naming the job that holds it, instead of both committing over each other. The kernel drops a flock when its
// process dies, so a dead job's lock is simply taken over, and said. What this is not: a lock between
// ranks of one job (they agree through rank 0).
import Foundation
import Support

public enum DirectoryLockError: Error, CustomStringConvertible {
    case held(directory: String, holder: String)
    case unusable(directory: String, reason: String)

    public var description: String {
        switch self {
        case let .held(d, h):
            "\(d) is in use by another job (\(h)); give this run its own --checkpoint-dir, or stop that job first"
        case let .unusable(d, r): "\(d): cannot take the checkpoint directory's lock: \(r)"
        }
    }
}

public final class DirectoryLock {
    public static let fileName = "job.lock"
    private let descriptor: Int32

    /// Takes the lock or throws naming the holder; `log` hears about a lock a dead job left behind.
    public init(directory: String, log: (String) -> Void) throws {
        let path = directory + "/" + Self.fileName
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw DirectoryLockError.unusable(directory: directory, reason: String(cString: strerror(errno)))
        }
        let previous = Self.contents(fd)
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let reason = errno
            close(fd)
            if reason == EWOULDBLOCK {
                throw DirectoryLockError.held(directory: directory, holder: previous ?? "holder unknown")
            }
            throw DirectoryLockError.unusable(directory: directory, reason: String(cString: strerror(reason)))
        }
        descriptor = fd
        if let previous, !previous.isEmpty {
            log("took over the lock of \(directory) from a job that is gone (\(previous))")
        }
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count - 1)
        let holder =
            "host \(String(cString: host)), pid \(getpid()), since \(ISO8601DateFormatter().string(from: Date())): "
            + CommandLine.arguments.joined(separator: " ")
        ftruncate(fd, 0)
        _ = Array(holder.utf8).withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        fsync(fd)
    }

    deinit {
        // An orderly end empties the file, so the next job has nothing to take over; then the flock goes.
        ftruncate(descriptor, 0)
        close(descriptor)
    }

    private static func contents(_ fd: Int32) -> String? {
        var bytes = [UInt8](repeating: 0, count: 4096)
        let n = pread(fd, &bytes, bytes.count, 0)
        guard n > 0 else { return nil }
        return String(decoding: bytes.prefix(n), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
