// Why a path cannot be read, in words a user can act on: a symbolic link loop or a dangling link is named as
// such, where Foundation's `contents(atPath:)` only says nil and its errors say "NSCocoaErrorDomain error 256".
import Foundation

public enum UnreadablePath {
    public static let noSuchFile = "no such file"
    public static let directoryReason = "a directory, not a file"

    /// The reason `path` cannot be opened for reading, from stat(2) and open(2)'s errno.
    public static func reason(_ path: String) -> String {
        var info = stat()
        if stat(path, &info) != 0 {
            let code = errno
            switch code {
            case ELOOP: return "a symbolic link loop (too many levels of symbolic links); point the link at a real file"
            case ENOENT:
                var link = stat()
                if lstat(path, &link) == 0 && (link.st_mode & S_IFMT) == S_IFLNK {
                    let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? "?"
                    return "a dangling symbolic link (to \(target), which does not exist)"
                }
                return noSuchFile
            case EACCES: return "permission denied"
            case ENOTDIR: return "a part of the path is not a directory"
            default: return String(cString: strerror(code))
            }
        }
        if (info.st_mode & S_IFMT) == S_IFDIR { return directoryReason }
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return errnoText() }
        close(fd)
        return "it could not be read"
    }
}
