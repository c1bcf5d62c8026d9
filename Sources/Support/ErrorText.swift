// Errors as a person reads them. Our own errors describe themselves; Foundation's file errors print as
// "Error Domain=NSCocoaErrorDomain Code=4 … UserInfo={…}", so they are reduced to the system's reason and the
// path ("No such file or directory: /data/x").
import Foundation

public func plainText(_ error: Error) -> String {
    let ns = error as NSError
    guard ns.domain == NSCocoaErrorDomain || ns.domain == NSPOSIXErrorDomain else {
        return (error as? CustomStringConvertible)?.description ?? "\(error)"
    }
    let path = ns.userInfo[NSFilePathErrorKey] as? String
    let underlying = ns.domain == NSPOSIXErrorDomain ? ns : ns.userInfo[NSUnderlyingErrorKey] as? NSError
    var reason =
        underlying.flatMap { $0.domain == NSPOSIXErrorDomain ? String(cString: strerror(Int32($0.code))) : nil }
        ?? ns.localizedDescription.replacingOccurrences(of: "The operation could not be completed. ", with: "")
    if reason.hasSuffix(".") { reason.removeLast() }
    return path.map { "\(reason): \($0)" } ?? reason
}
