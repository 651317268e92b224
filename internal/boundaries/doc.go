// Package boundaries holds no code. Its test checks the import graph
// against the layout: the adapters (codat/, vault/, store/) never import
// one another, nor the engine or the commands above them, and the shared
// leaves (secret/, internal/...) import nothing of this module, and the
// consumers' package (codatauth/) imports only secret/. A change
// that would make vault/ reach into codat/ again fails there, with the
// import path that broke the rule.
package boundaries
