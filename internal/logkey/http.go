package logkey

// Keys for HTTP request logs (collector API) and service start-up.
const (
	Method  = "method"
	Route   = "route"
	Status  = "status"
	Remote  = "remote"
	Role    = "role"
	DataDir = "data_dir"
	CAFile  = "ca_file"
	Store   = "store"
)
