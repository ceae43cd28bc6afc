package sweeper

import "github.com/galaxy/rtmanager/agent/engine"

// SetBeforeRemove installs a hook that image GC runs once it has chosen
// an image and before its final check.
func SetBeforeRemove(c *ImageGCConfig, f func(engine.LocalImage)) { c.beforeRemove = f }
