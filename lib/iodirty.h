/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libiodirty: IOMMU dirty tracking for out-of-process live migration. */
#ifndef IODIRTY_H
#define IODIRTY_H

#include "iod-util.h"
#include "iod-names.h"
#include "iod-bitmap.h"
#include "iod-iova-map.h"
#include "iod-dirty-log.h"
#include "iod-iommufd.h"
#include "iod-vfio.h"
#include "iod-state.h"
#include "iod-state-journal.h"
#include "iod-json.h"

#define IOD_VERSION "0.1.0"

#endif
