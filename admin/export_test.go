package admin

// NewServerFor is NewServer with the daemon's uid and the credential
// read given, so that a test run by one user can play another.
var NewServerFor = newServer
