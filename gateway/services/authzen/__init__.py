"""AuthZEN Authorization API 1.0 over the decision service: the wire format (wire), the
subject directory and refinements (directories), the resource directory (resources),
search paging (paging), and the service that maps AuthZEN questions onto Ringfence's
(service)."""
